"""The one record model that flows from generation to training, and its JSONL form.

``Record`` is one teacher answer to one rendered prompt (a line of ``generated.jsonl``). The
curate stage fills ``parsed`` and ``soft_label`` and writes ``TrainRow``s, the rows TRL reads.
docs/architecture.md documents both; keep them in step.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import InputDataError

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    """One chat message, in the OpenAI / TRL conversational form."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


class TokenLogprob(BaseModel):
    """One candidate token with its log-probability (natural log, at the teacher's T=1)."""

    model_config = ConfigDict(extra="forbid")
    token: str
    logprob: float
    id: int | None = Field(None, description="Token id in the teacher's vocabulary, where the backend gives it.")
    bytes: list[int] | None = Field(None, description="UTF-8 bytes of the token, where the backend gives them.")


class TokenPosition(TokenLogprob):
    """One generated token (the sampled one) plus the teacher's top-k alternatives at that position."""

    top: list[TokenLogprob] = Field(default_factory=list, description="Top-k candidates, most likely first.")


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class TeacherInfo(BaseModel):
    """Which teacher answered, with the exact sampling parameters sent."""

    model_config = ConfigDict(extra="forbid")
    backend: str
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    top_logprobs: int | None = None


# Where a soft label came from: "scored" = every label's probability from a scoring teacher (exact);
# "logprobs" = read from the answer's top-k token logprobs (labels outside the top-k get 0);
# "one_hot" = no probabilities, the parsed label only. See pipeline/curation/soft_labels.py.
SoftLabelKind = Literal["scored", "logprobs", "one_hot"]


class Record(BaseModel):
    """One generated example: a line of ``data/<task>/generated/generated.jsonl``."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="Stable id: the first 16 hex digits of request_hash.")
    task: str
    inputs: dict[str, Any] = Field(description="The input fields after the task's field mapping.")
    messages: list[Message] = Field(description="The rendered prompt: system, few-shot turns, user.")
    completion: str = Field(description="The teacher's answer text.")
    finish_reason: str | None = None
    parsed: Any = Field(None, description="Filled by curate: the label, the JSON object, or the text.")
    soft_label: dict[str, float] | None = Field(None, description="Filled by curate for label tasks: P(label).")
    soft_label_kind: SoftLabelKind | None = None
    teacher: TeacherInfo
    logprobs: list[TokenPosition] | None = Field(None, description="Per generated token: chosen token + top-k.")
    label_logprobs: dict[str, float] | None = Field(
        None, description="Label tasks with a scoring teacher (hf): log P(label) for every label of the set.")
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = Field(None, description="usage x price table; None when the price is unknown.")
    latency_s: float | None = None
    request_hash: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cached: bool = Field(False, description="True when this answer came from the cache, not a new request.")


class TrainRow(BaseModel):
    """One row of a built dataset (``train.jsonl`` / ``eval.jsonl``), in TRL's conversational
    prompt-completion form, so ``SFTTrainer`` reads it directly and trains on the completion only.
    The soft labels and token logprobs ride along in side columns for knowledge distillation."""

    model_config = ConfigDict(extra="forbid")
    id: str
    prompt: list[Message]
    completion: list[Message] = Field(description="One assistant message: the teacher's answer.")
    label: str | None = Field(None, description="Label tasks: the parsed label.")
    soft_label: dict[str, float] | None = None
    soft_label_kind: SoftLabelKind | None = None
    token_logprobs: list[TokenPosition] | None = Field(None, description="The teacher's per-token top-k.")
    teacher_model: str | None = None
    teacher_backend: str | None = None


def request_hash(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request (backend, model, params, messages)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_jsonl(path: Path | str, model: type[BaseModel] | None = None, *, strict: bool = True) -> Iterator[Any]:
    """Yield the rows of a JSONL file (as ``model`` when given). A bad line raises InputDataError
    naming the file and the line; ``strict=False`` skips it. To report each bad line instead, use
    ``iter_jsonl_with_errors``."""
    for lineno, row, err in iter_jsonl_with_errors(path, model):
        if err is not None:
            if strict:
                raise InputDataError(f"{path}:{lineno}: {err}")
            continue
        yield row


def iter_jsonl_with_errors(path: Path | str, model: type[BaseModel] | None = None):
    """Yield ``(line_number, row_or_None, error_or_None)`` for every non-blank line, so a caller can
    report each bad line (nothing is skipped silently)."""
    path = Path(path)
    try:
        fh = path.open("rb")  # decoded line by line, so a bad byte is reported with its own line number
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read ({exc.strerror or exc}); check the path") from None
    with fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputDataError(f"{path}:{lineno}: not UTF-8 text; re-encode the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno}); fix or delete the line"
                continue
            if model is None:
                yield lineno, data, None
                continue
            try:
                yield lineno, model.model_validate(data), None
            except ValidationError as exc:
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "(row)"
                yield lineno, None, f"field '{field}': {first['msg']}"


def write_jsonl(path: Path | str, rows: Iterable[BaseModel | dict], *, append: bool = False) -> int:
    """Write rows as JSONL (pydantic models are dumped in JSON mode). Returns the number written.
    A full rewrite goes through a temporary file and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path if append else path.with_suffix(path.suffix + ".tmp")
    n = 0
    with target.open("a" if append else "w", encoding="utf-8") as fh:
        for row in rows:
            data = row.model_dump(mode="json") if isinstance(row, BaseModel) else row
            fh.write(json.dumps(data, ensure_ascii=False) + "\n")
            n += 1
    if not append:
        target.replace(path)
    return n
