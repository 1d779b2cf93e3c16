"""The state of submitted batch jobs, kept in the answer cache's SQLite file, and the splitting rule.

Reads and writes two tables of ``data/<task>/cache.sqlite`` (next to ``answers``):

    batch_jobs   one row per batch: local id, provider, endpoint, model, provider batch id, status, file ids,
                 round (0 = first submission, 1 = first resubmission, ...), timestamps
    batch_items  one row per request in a batch: its hash, the canonical request payload (so a paid
                 answer can be cached even by a later run that no longer asks for it), its state

A job is written as ``submitting`` BEFORE the provider is called and becomes ``live`` once the
provider's batch id is stored; so a run killed at any moment either finds a ``live`` job and goes
back to polling it, or finds a ``submitting`` one and looks for it at the provider before ever
submitting its requests again. That is what keeps a request from being paid for twice.
"""
from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import TeacherError

_DDL = [
    """CREATE TABLE IF NOT EXISTS batch_jobs (
        local_id       TEXT PRIMARY KEY,
        provider       TEXT NOT NULL,      -- openai | anthropic
        endpoint       TEXT NOT NULL,      -- teacher.base_url, or "default": a batch is polled where it was sent
        model          TEXT NOT NULL,
        batch_id       TEXT,               -- the provider's id; NULL while submitting
        status         TEXT NOT NULL,      -- submitting | live | ended | failed
        provider_status TEXT,              -- the provider's last word (in_progress, expired, ...)
        input_file_id  TEXT,
        output_file_id TEXT,
        error_file_id  TEXT,
        round          INTEGER NOT NULL,
        n_requests     INTEGER NOT NULL,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        detail         TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS batch_items (
        local_id     TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        payload      TEXT NOT NULL,        -- canonical request (JSON), what the cache stores with the answer
        state        TEXT NOT NULL,        -- pending | done | retry | failed
        reason       TEXT,
        PRIMARY KEY (local_id, request_hash)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_items_hash ON batch_items (request_hash)",
]

OPEN_STATUSES = ("submitting", "live")


@dataclass
class BatchJob:
    """One batch submitted to a provider: a row of ``batch_jobs``."""

    local_id: str
    provider: str
    endpoint: str
    model: str
    batch_id: str | None
    status: str
    round: int
    n_requests: int
    created_at: float
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    provider_status: str | None = None


def split_by_limits(sizes: list[int], max_requests: int, max_bytes: int, *, where: str = "batch") -> list[slice]:
    """Cut a list of entries (their serialised sizes in bytes) into consecutive slices of at most
    ``max_requests`` entries and ``max_bytes`` bytes each. One entry over ``max_bytes`` is an error:
    no split can send it."""
    slices, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if size > max_bytes:
            raise TeacherError(
                f"{where}: one request is {size:,} bytes, over the {max_bytes:,}-byte batch file limit; "
                "shorten the prompt or generate without --batch"
            )
        if i > start and (i - start >= max_requests or total + size > max_bytes):
            slices.append(slice(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        slices.append(slice(start, len(sizes)))
    return slices


class BatchJobStore:
    """The two tables above, through our own connection to the cache's file (WAL, like the cache),
    so a job and its items are written in one transaction."""

    def __init__(self, path: Path | str):
        self.conn = sqlite3.connect(Path(path), timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        for ddl in _DDL:
            self.conn.execute(ddl)

    def close(self) -> None:
        self.conn.close()

    def _tx(self, statements: Iterable[tuple[str, Iterable[Any]]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                if isinstance(params, list) and params and isinstance(params[0], tuple):
                    self.conn.executemany(sql, params)
                else:
                    self.conn.execute(sql, tuple(params))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- writing -------------------------------------------------------------------------
    def begin_job(self, provider: str, endpoint: str, model: str, round_: int,
                  items: list[tuple[str, dict]]) -> BatchJob:
        """Record a job as ``submitting`` with its (hash, payload) items, before the provider hears of it."""
        now = time.time()
        job = BatchJob(uuid.uuid4().hex, provider, endpoint, model, None, "submitting", round_, len(items), now)
        self._tx([
            (("INSERT INTO batch_jobs (local_id, provider, endpoint, model, status, round, n_requests, created_at, "
             "updated_at) VALUES (?,?,?,?,?,?,?,?,?)"),
             (job.local_id, provider, endpoint, model, "submitting", round_, len(items), now, now)),
            ("INSERT INTO batch_items (local_id, request_hash, payload, state) VALUES (?,?,?,'pending')",
             [(job.local_id, h, json.dumps(p, sort_keys=True, ensure_ascii=False, default=str)) for h, p in items]),
        ])
        return job

    def update_job(self, job: BatchJob, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(job, key, value)
        cols = ", ".join(f"{k}=?" for k in fields)
        self._tx([(f"UPDATE batch_jobs SET {cols}, updated_at=? WHERE local_id=?",
                   (*fields.values(), time.time(), job.local_id))])

    def drop_job(self, job: BatchJob) -> None:
        """Forget a job the provider never created (a submit that failed before it was accepted)."""
        self._tx([("DELETE FROM batch_items WHERE local_id=?", (job.local_id,)),
                  ("DELETE FROM batch_jobs WHERE local_id=?", (job.local_id,))])

    def mark_items(self, job: BatchJob, state: str, hashes_reasons: list[tuple[str, str | None]]) -> None:
        if hashes_reasons:
            self._tx([("UPDATE batch_items SET state=?, reason=? WHERE local_id=? AND request_hash=?",
                       [(state, reason, job.local_id, h) for h, reason in hashes_reasons])])

    # -- reading -------------------------------------------------------------------------
    def open_jobs(self, provider: str, endpoint: str) -> list[BatchJob]:
        """Jobs not yet collected at this provider and endpoint, whatever their model: a batch paid
        for under an earlier config is still collected."""
        rows = self.conn.execute(
            "SELECT local_id, provider, endpoint, model, batch_id, status, round, n_requests, created_at, "
            "input_file_id, output_file_id, error_file_id, provider_status FROM batch_jobs "
            "WHERE provider=? AND endpoint=? AND status IN ('submitting','live') ORDER BY created_at",
            (provider, endpoint),
        ).fetchall()
        return [BatchJob(*row) for row in rows]

    def items(self, job: BatchJob, state: str | None = None) -> dict[str, dict]:
        """hash -> canonical payload of the job's items (in ``state`` when given)."""
        sql, params = "SELECT request_hash, payload FROM batch_items WHERE local_id=?", [job.local_id]
        if state:
            sql, params = sql + " AND state=?", params + [state]
        return {h: json.loads(p) for h, p in self.conn.execute(sql, params).fetchall()}

    def hashes_in_open_jobs(self, provider: str, endpoint: str) -> set[str]:
        """Every item of a job not yet fully collected, whatever its state: an item marked ``retry``
        by a run killed mid-collect is resubmitted by that job's next collect, not by a new job."""
        rows = self.conn.execute(
            "SELECT i.request_hash FROM batch_items i JOIN batch_jobs j ON i.local_id=j.local_id "
            "WHERE j.provider=? AND j.endpoint=? AND j.status IN ('submitting','live')",
            (provider, endpoint),
        ).fetchall()
        return {r[0] for r in rows}

    def open_elsewhere(self, provider: str, endpoint: str) -> list[str]:
        """Endpoints other than ``endpoint`` that still hold open jobs (the user switched base_url)."""
        rows = self.conn.execute(
            "SELECT DISTINCT endpoint FROM batch_jobs WHERE provider=? AND endpoint!=? AND status IN ('submitting','live')",
            (provider, endpoint),
        ).fetchall()
        return [r[0] for r in rows]

    def claimed_batch_ids(self, provider: str) -> set[str]:
        rows = self.conn.execute("SELECT batch_id FROM batch_jobs WHERE provider=? AND batch_id IS NOT NULL",
                                 (provider,)).fetchall()
        return {r[0] for r in rows}
