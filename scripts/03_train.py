"""Train the student: ``python scripts/03_train.py <task> [--method kd] [--set key=value ...]``.
The same as ``distill train``; runs under ``accelerate launch scripts/03_train.py ...`` too."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("train")
