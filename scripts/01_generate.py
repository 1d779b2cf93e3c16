"""Generate: ask the teacher for every input's answer, cached, resumable, within limits and budget.

    python scripts/01_generate.py sentiment [--quiet] [--batch] [--limit N]

Same as ``distill generate``; see ``--help``.
"""
from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("generate")
