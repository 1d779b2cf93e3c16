"""The answer cache: every teacher answer, in SQLite (WAL mode), keyed by the request hash.

Reads and writes ``data/<task>/cache.sqlite``. Each answer is committed the moment it arrives, so
``kill -9`` loses at most the requests in flight, and a re-run only sends requests with no
answer yet. Other modules keep their own state in the same file (e.g. the batch stage's submitted
jobs) through ``ensure_table`` and ``conn``.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

from pipeline.errors import InputDataError
from pipeline.teachers.base import TeacherResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    request_hash TEXT PRIMARY KEY,
    request      TEXT NOT NULL,   -- canonical request payload (JSON): backend, model, params, messages
    response     TEXT NOT NULL,   -- TeacherResponse (JSON)
    batch        INTEGER NOT NULL DEFAULT 0,  -- 1 when answered through a batch API (discounted price)
    created_at   REAL NOT NULL
)
"""


class AnswerCache:
    """``AnswerCache(path)``: ``get``, ``put``, ``in``; safe to share between threads."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process (WAL is written before commit returns);
            # only a power cut can lose the last commits, and those answers are simply re-asked.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InputDataError(f"{self.path}: not a usable SQLite cache ({exc}); move it aside and re-run") from None
        self._lock = threading.Lock()

    # -- answers ---------------------------------------------------------------------------
    def get(self, request_hash: str) -> TeacherResponse | None:
        with self._lock:
            row = self.conn.execute("SELECT response FROM answers WHERE request_hash=?", (request_hash,)).fetchone()
        return None if row is None else TeacherResponse.model_validate_json(row[0])

    def _select_many(self, column: str, hashes: Iterable[str]) -> list[tuple]:
        hashes = list(dict.fromkeys(hashes))
        rows: list[tuple] = []
        for i in range(0, len(hashes), 500):  # SQLite caps the number of bound parameters
            chunk = hashes[i : i + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows += self.conn.execute(
                    f"SELECT request_hash, {column} FROM answers WHERE request_hash IN ({marks})", chunk
                ).fetchall()
        return rows

    def get_many(self, hashes: Iterable[str]) -> dict[str, TeacherResponse]:
        """Answers for those of ``hashes`` that are stored."""
        return {h: TeacherResponse.model_validate_json(r) for h, r in self._select_many("response", hashes)}

    def present(self, hashes: Iterable[str]) -> set[str]:
        """Those of ``hashes`` that have an answer (without reading the answers)."""
        return {h for h, _ in self._select_many("batch", hashes)}

    def batch_answered(self, hashes: Iterable[str]) -> set[str]:
        """Those of ``hashes`` answered through a batch API (priced at the batch discount)."""
        return {h for h, b in self._select_many("batch", hashes) if b}

    def is_batch(self, request_hash: str) -> bool:
        with self._lock:
            row = self.conn.execute("SELECT batch FROM answers WHERE request_hash=?", (request_hash,)).fetchone()
        return bool(row and row[0])

    def put(self, request_hash: str, request_payload: dict[str, Any], response: TeacherResponse,
            *, batch: bool = False) -> None:
        """Store one answer and commit at once. A second put for the same hash keeps the first."""
        with self._lock:
            self.conn.execute(
                "INSERT OR IGNORE INTO answers (request_hash, request, response, batch, created_at) VALUES (?,?,?,?,?)",
                (request_hash, json.dumps(request_payload, sort_keys=True, ensure_ascii=False, default=str),
                 response.model_dump_json(), int(batch), time.time()),
            )

    def __contains__(self, request_hash: object) -> bool:
        with self._lock:
            row = self.conn.execute("SELECT 1 FROM answers WHERE request_hash=?", (request_hash,)).fetchone()
        return row is not None

    def __len__(self) -> int:
        with self._lock:
            return self.conn.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def hashes(self) -> Iterator[str]:
        with self._lock:
            rows = self.conn.execute("SELECT request_hash FROM answers").fetchall()
        return iter(r[0] for r in rows)

    # -- room for other state ---------------------------------------------------------------
    def ensure_table(self, ddl: str) -> None:
        """Create another table in the same file (``CREATE TABLE IF NOT EXISTS ...``)."""
        with self._lock:
            self.conn.execute(ddl)

    def execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Run one statement under the cache's lock (autocommit) and return its rows."""
        with self._lock:
            return self.conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
