"""Our exception types. Every error a user can cause is one of these.

The CLI prints ``str(err)`` as one line and exits non-zero; no traceback. A message names the
file, the field or line, and the fix. Never put a secret in a message: use ``redact``.
"""
from __future__ import annotations

import os
import re


class DistillError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(redact(" ".join(str(message).split())))


class ConfigError(DistillError):
    """task.yaml or a CLI flag is wrong."""


class TemplateError(DistillError):
    """A Jinja2 template is missing, does not parse, or uses an undefined variable."""


class InputDataError(DistillError):
    """An input file (JSONL, CSV, HF dataset) is missing, unreadable, or has a bad row."""


class TeacherError(DistillError):
    """The teacher refused the request for a reason a retry will not fix (401, 403, 404, 400)."""


class BudgetExceeded(DistillError):
    """A budget cap (cost, requests, tokens) was reached; the run stopped cleanly and can resume."""

    exit_code = 3


class LockedError(DistillError):
    """Another run holds the task's lock."""

    exit_code = 4


# Shapes of API keys we know; anything that looks like one is masked in messages and logs.
_KEY_PATTERNS = [
    re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.]{8,}"),
    re.compile(r"hf_[A-Za-z0-9]{8,}"),  # Hugging Face access tokens
]
_KEY_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DISTILL_API_KEY", "VLLM_API_KEY", "HF_TOKEN")


def redact(text: str) -> str:
    """Mask API keys: any key-shaped string, and the literal value of any key variable we read."""
    for var in _KEY_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for pat in _KEY_PATTERNS:
        text = pat.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text
