"""The README's demo: validate and preview the sentiment task (the full pipeline lands in later stages)."""
from __future__ import annotations

import sys

from pipeline.cli import main

if __name__ == "__main__":
    rc = main(["validate", "prompts/sentiment"])
    if rc == 0:
        rc = main(["preview", "prompts/sentiment", "-n", "3"])
    sys.exit(rc)
