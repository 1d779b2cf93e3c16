"""``eval:`` — read by the evaluate stage."""
from __future__ import annotations

from pydantic import Field

from pipeline.config.base import Section
from pipeline.config.inputs import SourceConfig


class EvalConfig(Section):
    """Parameters that control evaluating the student against the teacher on real inputs."""

    source: SourceConfig | None = Field(None, description="Real inputs (JSONL/CSV); default: the held-out split.")
    gold_field: str | None = Field(None, description="Column of the source holding the gold answer, if any.")
    gold_map: dict[str, str] = Field(
        default_factory=dict, description="Map raw gold values to labels (e.g. fresh -> positive)."
    )
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N inputs only.")
    student_price_per_hour: float = Field(0.50, ge=0, description="USD per hour of the machine serving the student.")
    target_quality: float | None = Field(None, description="Routing target; default: the teacher's own quality.")
    batch_size: int = Field(16, ge=1)
