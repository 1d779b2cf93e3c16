"""Evaluate the trained student against the teacher: ``python scripts/04_evaluate.py <task> [--model PATH] [--limit N]``.

Same as ``distill evaluate``; see docs/evaluate.md.
"""
from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("evaluate")
