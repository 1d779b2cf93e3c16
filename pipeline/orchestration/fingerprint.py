"""Content fingerprints of what each stage reads, so `distill run` skips a stage whose inputs and
config are unchanged. A fingerprint is stored only when its stage finishes, so an interrupted stage
(a crash, a budget cap) runs again next time."""
from __future__ import annotations

import hashlib
import json
from typing import Any

from pipeline.config.task import TaskFolder
from pipeline.hashing import file_sha256
from pipeline.inputs import is_pattern, source_hashes
from pipeline.paths import TaskPaths


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _source_hash(task: TaskFolder, source) -> str | None:
    """The source's content: one file's hash (as before patterns, so an upgrade re-runs nothing), or,
    for a glob pattern, the names and hashes of the files it matches (a new day's file changes it)."""
    if source is None:
        return None
    if not is_pattern(source):
        return file_sha256(task.file(source.path))
    return digest(sorted(source_hashes(source, task.path).items()))


def generate_fingerprint(task: TaskFolder) -> str:
    """What the generate stage reads: teacher, inputs, templates and the input file."""
    cfg = task.config
    templates = task.template_hashes()
    return digest(
        {
            "teacher": cfg.teacher.model_dump(mode="json", exclude={"budget", "concurrency"}),
            "inputs": cfg.inputs.model_dump(mode="json"),
            "templates": templates,
            "source": _source_hash(task, cfg.inputs.source),
        }
    )


def curate_fingerprint(task: TaskFolder) -> str:
    cfg = task.config
    paths = TaskPaths(cfg.name)
    return digest(
        {
            "generated": file_sha256(paths.generated_jsonl),
            "sections": {k: getattr(cfg, k).model_dump(mode="json") for k in ("output", "filters", "dedupe", "decontam", "split")},
            "eval_source": _source_hash(task, cfg.eval.source),
            "extra": [file_sha256(task.file(f)) for f in cfg.decontam.extra_files],
        }
    )


def train_fingerprint(task: TaskFolder, dataset_version: str) -> str:
    cfg = task.config
    paths = TaskPaths(cfg.name)
    return digest(
        {
            "dataset": file_sha256(paths.versions_dir / dataset_version / "train.jsonl"),
            "student": cfg.student.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json"),
        }
    )


def evaluate_fingerprint(task: TaskFolder, model_version: str) -> str:
    cfg = task.config
    return digest(
        {
            "model": model_version,
            "eval": cfg.eval.model_dump(mode="json"),
            "eval_source": _source_hash(task, cfg.eval.source),
            "teacher": cfg.teacher.model_dump(mode="json", exclude={"budget", "concurrency"}),
            "templates": task.template_hashes(),
        }
    )
