"""Preview a task: `python scripts/00_preview.py prompts/sentiment -n 3` (same as `distill preview`)."""
from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("preview")
