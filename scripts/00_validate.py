"""Validate a task folder: `python scripts/00_validate.py prompts/sentiment` (same as `distill validate`)."""
from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("validate")
