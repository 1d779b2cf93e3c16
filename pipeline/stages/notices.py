"""A stage's warnings: printed to stderr as they happen unless the run is quiet, and kept in the stage's
manifest (``"warnings"``), which ``distill run --quiet`` carries into its one-line JSON summary. A
scheduled run prints nothing, so a warning that only went to the terminal reached nobody."""
from __future__ import annotations

import sys


def warn(line: str | None, warnings: list[str], quiet: bool) -> None:
    """Keep ``line`` (without its ``warning:`` prefix) in ``warnings``; print it unless ``quiet``."""
    if not line:
        return
    text = line.removeprefix("warning: ")
    warnings.append(text)
    if not quiet:
        print(f"warning: {text}", file=sys.stderr, flush=True)
