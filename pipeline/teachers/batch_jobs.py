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
from collections.abc import Awaitable, Callable, Iterable
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
class Job:
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
    def begin_job(self, provider: str, endpoint: str, model: str, round_: int, items: list[tuple[str, dict]]) -> Job:
        """Record a job as ``submitting`` with its (hash, payload) items, before the provider hears of it."""
        now = time.time()
        job = Job(uuid.uuid4().hex, provider, endpoint, model, None, "submitting", round_, len(items), now)
        self._tx([
            (("INSERT INTO batch_jobs (local_id, provider, endpoint, model, status, round, n_requests, created_at, "
             "updated_at) VALUES (?,?,?,?,?,?,?,?,?)"),
             (job.local_id, provider, endpoint, model, "submitting", round_, len(items), now, now)),
            ("INSERT INTO batch_items (local_id, request_hash, payload, state) VALUES (?,?,?,'pending')",
             [(job.local_id, h, json.dumps(p, sort_keys=True, ensure_ascii=False, default=str)) for h, p in items]),
        ])
        return job

    def update_job(self, job: Job, **fields: Any) -> None:
        for key, value in fields.items():
            setattr(job, key, value)
        cols = ", ".join(f"{k}=?" for k in fields)
        self._tx([(f"UPDATE batch_jobs SET {cols}, updated_at=? WHERE local_id=?",
                   (*fields.values(), time.time(), job.local_id))])

    def drop_job(self, job: Job) -> None:
        """Forget a job the provider never created (a submit that failed before it was accepted)."""
        self._tx([("DELETE FROM batch_items WHERE local_id=?", (job.local_id,)),
                  ("DELETE FROM batch_jobs WHERE local_id=?", (job.local_id,))])

    def mark_items(self, job: Job, state: str, hashes_reasons: list[tuple[str, str | None]]) -> None:
        if hashes_reasons:
            self._tx([("UPDATE batch_items SET state=?, reason=? WHERE local_id=? AND request_hash=?",
                       [(state, reason, job.local_id, h) for h, reason in hashes_reasons])])

    # -- reading -------------------------------------------------------------------------
    def open_jobs(self, provider: str, endpoint: str) -> list[Job]:
        """Jobs not yet collected at this provider and endpoint, whatever their model: a batch paid
        for under an earlier config is still collected."""
        rows = self.conn.execute(
            "SELECT local_id, provider, endpoint, model, batch_id, status, round, n_requests, created_at, "
            "input_file_id, output_file_id, error_file_id, provider_status FROM batch_jobs "
            "WHERE provider=? AND endpoint=? AND status IN ('submitting','live') ORDER BY created_at",
            (provider, endpoint),
        ).fetchall()
        return [Job(*row) for row in rows]

    def items(self, job: Job, state: str | None = None) -> dict[str, dict]:
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


# -- what the provider adapters (batch_openai.py, batch_anthropic.py) share ---------------------
class BatchAPIBase:
    """Settings both adapters read from the teacher config. A subclass sets ``provider`` and
    ``key_env`` and builds its SDK client from ``key``, ``base_url``, ``timeout_s``, ``max_retries``."""

    provider: str
    key_env: str

    def __init__(self, cfg: Any, sdk: Any, max_requests: int, max_bytes: int):
        from pipeline.teachers.openai_backend import api_key_for

        self._errors = (sdk.APIError,)
        self.key = api_key_for(cfg, self.key_env)
        # Batches are not spread over replicas: a list of base URLs sends them to the first.
        self.base_url = cfg.base_url[0] if isinstance(cfg.base_url, list) else cfg.base_url
        self.endpoint = self.base_url or "default"
        self.model = cfg.model
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.timeout_s, self.max_retries = cfg.timeout_s, cfg.max_retries


# -- what a provider adapter hands back ----------------------------------------------------------
@dataclass
class Polled:
    """A batch's state at one poll."""

    ended: bool
    status: str  # the provider's own word: in_progress, completed, expired, ended, ...
    done: int = 0
    total: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    latency_s: float = 0.0  # creation to end: the turnaround every answer in the batch shares
    fatal: str | None = None  # the whole batch was refused (e.g. failed validation)


@dataclass
class ItemResult:
    """One request's fate: ``ok`` (with its response), ``retry`` (a 5xx, a malformed line),
    ``expired`` (the window closed first), or ``failed`` (a 4xx or a cancel: not resubmitted)."""

    custom_id: str
    outcome: str
    response: Any = None  # TeacherResponse when ok
    reason: str | None = None


# Answers that a retry may fix. To a create call they also prove nothing was created.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}
UPLOAD_TIMEOUT_S = 600.0  # a batch body runs to 200-256 MB: far longer than one chat request


async def create_batch_once(create: Callable[[], Awaitable[Any]], sdk_errors: tuple, where: str,
                            max_retries: int) -> Any:
    """Call a batch-creating POST whose client has SDK retries off. Neither SDK sends an
    idempotency key, so its retry of a timed-out create could start a second, paid batch; here only
    answers that prove nothing was created (429, 5xx) are retried, with tenacity's backoff. A
    timeout is raised as is: the job stays ``submitting`` and the next run looks for it."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda exc: getattr(exc, "status_code", None) in RETRYABLE_STATUS),
        stop=stop_after_attempt(max_retries + 1), wait=wait_exponential_jitter(multiplier=0.5, max=60), reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await create()
    except sdk_errors as exc:
        raise sdk_error(exc, where) from None


def parse_line(line: str) -> dict | None:
    """One line of a results file, or None when it is blank or unreadable: its item then counts as
    missing from the results and is resubmitted, while every other line is still read."""
    try:
        row = json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and isinstance(row.get("custom_id"), str) else None


def sdk_error(exc: Exception, where: str) -> TeacherError:
    """One line for an SDK exception. The SDK has already retried 429/5xx/connection errors
    (``max_retries``); what still fails stops the run, and the saved jobs resume on the next one."""
    status = getattr(exc, "status_code", None)
    err = _sdk_error(exc, status, where)
    # An HTTP answer means the provider decided; without one (timeout, reset) a submit may have landed.
    err.provider_answered = status is not None
    err.status = status
    return err


def _sdk_error(exc: Exception, status: int | None, where: str) -> TeacherError:
    from pipeline.teachers.base import classify_status

    if status is not None:
        headers = {k.lower(): v for k, v in getattr(getattr(exc, "response", None), "headers", {}).items()}
        err = classify_status(status, str(getattr(exc, "message", exc)), headers, where)
        if isinstance(err, TeacherError):
            return err
        return TeacherError(f"{where}: HTTP {status} after retries; submitted batches are saved, re-run to resume")
    return TeacherError(
        f"{where}: {type(exc).__name__} ({str(exc)[:120]}); submitted batches are saved, re-run to resume polling"
    )
