"""Keep the last N dataset versions (and the models trained on the ones removed go too)."""
from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.paths import TaskPaths


def prune_versions(paths: TaskPaths, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest dataset versions, never the one ``latest`` names, and the
    model folders trained on a deleted version. Returns the deleted version names, oldest first."""
    if keep < 1 or not paths.versions_dir.exists():
        return []
    versions = sorted(p.name for p in paths.versions_dir.iterdir() if p.is_dir())  # UTC stamps sort in time order
    latest = paths.latest_pointer.read_text().strip() if paths.latest_pointer.exists() else None
    doomed = [v for v in versions[:-keep] if v != latest]
    for version in doomed:
        shutil.rmtree(paths.versions_dir / version)
        for model_dir in _models_trained_on(paths.models_dir, version):
            shutil.rmtree(model_dir)
    return doomed


def _models_trained_on(models_dir: Path, version: str) -> list[Path]:
    import json

    if not models_dir.exists():
        return []
    pointer = models_dir / "latest"
    keep = pointer.read_text().strip() if pointer.exists() else None
    out = []
    for d in models_dir.iterdir():
        if d.name == keep:
            continue
        manifest = d / "train_manifest.json"
        if d.is_dir() and manifest.exists():
            try:
                if json.loads(manifest.read_text()).get("dataset_version") == version:
                    out.append(d)
            except ValueError:
                continue
    return out
