"""The ``distill`` command. Each subcommand is a stage module in ``pipeline/stages/`` with:

    HELP: str                       one line for ``distill --help``
    add_arguments(parser) -> None   its flags
    main(args) -> int               runs it; returns the exit code

Stage modules import heavy libraries (torch, transformers) inside functions, so ``--help`` is fast.
Any ``DistillError`` is printed as one line (no traceback) and sets the exit code.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.errors import DistillError, redact

COMMANDS = {
    "validate": "pipeline.stages.validate",
    "preview": "pipeline.stages.preview",
    "generate": "pipeline.stages.generate",
    "curate": "pipeline.stages.curate",
    "train": "pipeline.stages.train",
    "evaluate": "pipeline.stages.evaluate",
    "run": "pipeline.stages.run",
    "push": "pipeline.stages.push",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill", description="Distil a large teacher LLM into a small student specialist."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # stage not written yet: leave it out of the CLI
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from pipeline.env import load_env_file

    load_env_file(Path.cwd())  # keys come from the environment or .env only; the task's .env loads with the task
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: answers received so far are saved; re-run to resume", file=sys.stderr)
        return 130
    except OSError as err:  # disk full, permissions: still one line, never a traceback
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 1


def run_stage(name: str) -> None:
    """Entry point for ``scripts/NN_<stage>.py``: ``distill <name> <args...>``."""
    sys.exit(main([name, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
