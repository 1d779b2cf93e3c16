"""``eval:`` — read by the evaluate stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config.base import Section, keys_as_text
from pipeline.config.inputs import SourceConfig


class EvalConfig(Section):
    """Parameters that control evaluating the student against the teacher on real inputs.

    Parameters that control the inputs: ``source``, ``gold_field``, ``gold_map``, ``limit``.
    Parameters that control the student's run: ``batch_size``, ``max_new_tokens``, ``latency_samples``.
    Parameters that control cost and routing: ``student_price_per_hour``, ``teacher_price_per_hour``,
    ``target_quality``.
    """

    source: SourceConfig | None = Field(
        None, description="Real inputs (JSONL/JSON/CSV/Parquet/HF); default: the held-out split of the student's dataset version."
    )
    gold_field: str | None = Field(
        None, description="Input field (after source.fields) holding the gold answer; removed before prompting."
    )
    gold_map: dict[str, str] = Field(
        default_factory=dict, description="Map raw gold values to labels (e.g. fresh -> positive)."
    )
    _gold_map_keys = field_validator("gold_map", mode="before")(keys_as_text)
    limit: int | None = Field(
        None, ge=1, description="Evaluate on N inputs: a deterministic sample spread over the source (--limit overrides)."
    )
    label_answer: Literal["constrained", "generated"] = Field(
        "constrained",
        description="label tasks: the student's answer is its most probable label of the set (how a classifier "
        "is served), or its free generated text.",
    )
    student_price_per_hour: float = Field(0.50, ge=0, description="USD per hour of the machine serving the student.")
    teacher_price_per_hour: float | None = Field(
        None,
        ge=0,
        description="Local teachers (hf, vllm) only: USD per hour of their machine, priced by their recorded "
        "latency. Unset: the price table's per-token price (0 for local backends).",
    )
    target_quality: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Routing target on the quality metric's 0-1 scale (e.g. 0.9 accuracy); "
        "default: the teacher's own quality.",
    )
    batch_size: int = Field(16, ge=1, description="Student prompts per forward pass.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Student's longest answer, in tokens; default: the teacher's max_tokens (else 256)."
    )
    latency_samples: int = Field(
        32,
        ge=0,
        description="Inputs the student answers one at a time (batch size 1) to measure per-request latency; "
        "0 = take each batch's time per request instead.",
    )
