"""API keys and settings from ``.env`` files where the user is.

``distill`` reads ``./.env`` (the working directory) when it starts, and the task folder's
``.env`` when a task is loaded (``pipeline.config.load_task``), so a key kept next to a task works
from any directory. The first value found wins: a real environment variable, then the working
directory's ``.env``, then the task folder's. Empty values (``OPENAI_API_KEY=`` copied from
``.env.example``) count as not set. Values are never printed.
"""
from __future__ import annotations

import os
from pathlib import Path


def load_env_file(folder: Path) -> bool:
    """Set the variables of ``folder/.env`` that the environment does not have yet; True if read."""
    from dotenv import dotenv_values

    path = Path(folder) / ".env"
    if not path.is_file():
        return False
    for key, value in dotenv_values(path).items():
        if value and not os.environ.get(key):
            os.environ[key] = value
    return True
