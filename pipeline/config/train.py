"""``student:`` and ``train:`` — read by the train stage."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from pipeline.config.base import Section


class StudentConfig(Section):
    """Parameters that control how the student model is initialised."""

    init: Literal["pretrained", "from_teacher_layers"] = Field("pretrained")
    model: str | None = Field(None, description="pretrained: a local model folder (or the embedded teacher's name).")
    teacher_model: str | None = Field(None, description="from_teacher_layers: the local teacher to copy layers from.")
    layer_map: list[int] | None = Field(None, description="Teacher layer indices to keep (default: every other layer).")


class TrainConfig(Section):
    """Parameters that control training. ``sft`` is passed to TRL's SFTConfig field by field."""

    method: Literal["sft", "kd"] = Field("kd", description="sft: hard labels; kd: the teacher's soft labels.")
    temperature: float = Field(2.0, gt=0, description="KD temperature T; the stored T=1 logprobs are re-tempered.")
    alpha: float = Field(0.5, ge=0, le=1, description="KD weight: alpha*T^2*KL + (1-alpha)*CE.")
    kd_level: Literal["auto", "token", "label"] = Field(
        "auto",
        description="kd: 'token' = sparse top-k KL per token (the student must share the teacher's tokenizer); "
        "'label' = answer-level KL over the label set (any teacher, label tasks); 'auto' = token when the "
        "vocabularies match, else label.",
    )
    lora: dict[str, Any] | None = Field(None, description="peft LoraConfig fields; unset trains all weights.")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTConfig overrides (num_train_epochs, learning_rate...).")
