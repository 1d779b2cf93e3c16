"""Curate: parse, filter, dedupe and decontaminate generated answers into a versioned dataset.

    python scripts/02_curate.py sentiment [--strict]

Same as ``distill curate``; see ``--help``.
"""
from pipeline.cli import run_stage

if __name__ == "__main__":
    run_stage("curate")
