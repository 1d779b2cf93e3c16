"""Records as the generate stage writes them, with OpenAI-shaped top-5 logprobs, for the curate tests."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import yaml

from pipeline.records import (
    Message,
    Record,
    TeacherInfo,
    TokenLogprob,
    TokenPosition,
    Usage,
    request_hash,
    write_jsonl,
)

CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def position(token: str, logprob: float, top: list[tuple[str, float]]) -> TokenPosition:
    return TokenPosition(
        token=token, logprob=logprob, bytes=list(token.encode()),
        top=[TokenLogprob(token=t, logprob=lp, bytes=list(t.encode())) for t, lp in top],
    )


def positive_first_token(p_main: float = -0.15) -> list[TokenPosition]:
    """What gpt-4o-mini returns for 'positive' with top_logprobs=5: case and space variants."""
    return [position("positive", p_main, [("positive", p_main), ("Positive", -2.6), (" positive", -4.1),
                                          ("negative", -3.2), ("neutral", -5.5)])]


def negative_first_token(p_main: float = -0.05) -> list[TokenPosition]:
    return [position("negative", p_main, [("negative", p_main), ("Negative", -3.9), ("positive", -4.4),
                                          (" neg", -6.0), ("The", -7.5)])]


def make_record(
    text: str,
    completion: str,
    *,
    task: str = "sentiment",
    logprobs: list[TokenPosition] | None = None,
    finish_reason: str | None = "stop",
    salt: str = "",
) -> Record:
    messages = [Message(role="system", content="Label the review."), Message(role="user", content=f"Review: {text}")]
    rh = request_hash({"backend": "openai", "model": "gpt-4o-mini", "messages": [m.model_dump() for m in messages],
                       "salt": salt})
    return Record(
        id=rh[:16], task=task, inputs={"text": text}, messages=messages, completion=completion,
        finish_reason=finish_reason,
        teacher=TeacherInfo(backend="openai", model="gpt-4o-mini", params={"temperature": 0.0, "max_tokens": 3},
                            top_logprobs=5),
        logprobs=logprobs, usage=Usage(prompt_tokens=30, completion_tokens=1), cost_usd=0.00001, latency_s=0.2,
        request_hash=rh, created_at=CREATED,
    )


def write_generated(data_dir: Path, task: str, records: list[Record], extra_lines: dict[int, str] | None = None) -> Path:
    """generated.jsonl under ``data_dir``; ``extra_lines`` puts raw text at those 1-based line numbers."""
    path = data_dir / task / "generated" / "generated.jsonl"
    write_jsonl(path, records)
    if extra_lines:
        lines = path.read_text(encoding="utf-8").splitlines()
        for lineno in sorted(extra_lines):
            lines.insert(lineno - 1, extra_lines[lineno])
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def edit_task_yaml(folder: Path, **sections) -> None:
    path = folder / "task.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
