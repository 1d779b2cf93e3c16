"""Where each stage reads and writes. The layout is documented in docs/architecture.md.

    data/<task>/cache.sqlite               teacher answer cache + batch state (generate)
    data/<task>/generated/                 generated.jsonl, inputs.jsonl, manifest.json (generate)
    data/<task>/versions/<UTC ts>/         train.jsonl, eval.jsonl, rejected.jsonl, dataset/, README.md,
                                           manifest.json (curate); data/<task>/latest names the newest
    models/<task>/<version>/               model, tokenizer, metrics, report (train, evaluate)

DISTILL_DATA_DIR and DISTILL_MODELS_DIR move the two roots (default ./data and ./models).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def data_root() -> Path:
    return Path(os.environ.get("DISTILL_DATA_DIR", "data"))


def models_root() -> Path:
    return Path(os.environ.get("DISTILL_MODELS_DIR", "models"))


@dataclass(frozen=True)
class TaskPaths:
    task: str

    @property
    def root(self) -> Path:
        return data_root() / self.task

    @property
    def cache_db(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def generated_dir(self) -> Path:
        return self.root / "generated"

    @property
    def generated_jsonl(self) -> Path:
        return self.generated_dir / "generated.jsonl"

    @property
    def content_free_jsonl(self) -> Path:
        """The teacher's answers to content-free inputs (output.calibrate: content_free / em)."""
        return self.generated_dir / "content_free.jsonl"

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def latest_pointer(self) -> Path:
        """A text file holding the newest version's folder name (portable where symlinks are not)."""
        return self.root / "latest"

    def version_dir(self, version: str | None = None) -> Path:
        """A dataset version's folder; ``None`` or ``"latest"`` follows the pointer."""
        if version in (None, "latest"):
            if not self.latest_pointer.exists():
                from pipeline.errors import InputDataError

                raise InputDataError(
                    f"{self.latest_pointer}: no dataset built yet for task '{self.task}'; run `distill curate {self.task}`"
                )
            version = self.latest_pointer.read_text(encoding="utf-8").strip()
        return self.versions_dir / version

    @property
    def models_dir(self) -> Path:
        return models_root() / self.task

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"
