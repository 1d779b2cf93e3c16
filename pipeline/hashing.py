"""Content hashes for manifests and fingerprints: the one place files are hashed."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str | None:
    """SHA-256 of a file, or of a folder's files (names and bytes, in name order); None when missing.
    Read in 1 MiB chunks, so a large generated.jsonl is never held in memory."""
    path = Path(path)
    if not path.exists():
        return None
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
