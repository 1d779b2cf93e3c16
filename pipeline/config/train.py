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


class EarlyStoppingConfig(Section):
    """Parameters that control stopping on held-out agreement (label tasks)."""

    eval_steps: int = Field(20, ge=1, description="Measure the student's agreement with the teacher on the eval "
                            "split every N optimiser steps.")
    patience: int = Field(3, ge=1, description="Stop after N measurements without a new best; the best weights "
                          "are kept (in memory) and saved.")
    require_gain_beyond_chance: bool = Field(
        True, description="Keep a later step's weights only when they beat the starting weights beyond chance "
        "(McNemar, about 2 sd) on the eval rows where the two differ, or by a lower held-out loss as well; else the "
        "start is saved.")


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
    label_loss: Literal["kl", "logit_mse"] = Field(
        "logit_mse",
        description="label-level KD: 'logit_mse' matches the student's centred label log-probs to the teacher's, "
        "standardised over the training set (Ba & Caruana 2014; right for a flat or weak teacher, whose "
        "0.53/0.47 targets give a KL almost no gradient); 'kl' is Hinton's KL at train.temperature.",
    )
    label_head: Literal["pretrained", "probe"] = Field(
        "pretrained",
        description="label tasks: 'pretrained' keeps the student's head as loaded; 'probe' first fits the "
        "LM head's label rows to the training targets by ridge regression on the student's own features, "
        "then fine-tunes (LP-FT, Kumar et al. 2022; pipeline/training/label_head.py). Labels that share "
        "first tokens (book_flight, book_hotel) get a row for every token of their completions, fitted "
        "at every branch of their token trie. Use 'probe' when the student lacks its teacher's top layers "
        "(a bottom cut such as layer_map [0..5], as the demo does), with a gentle learning rate (~5e-6: "
        "above ~2e-5 fine-tuning undoes the probe) and early stopping, which keeps the probe if "
        "fine-tuning never beats it. A student that keeps the top layer reads its pretrained head "
        "better: on the demo the spread map [0,6,12,18,24,29] agreed 64% with 'pretrained', 56% with 'probe'.",
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        default_factory=EarlyStoppingConfig,
        description="Label tasks with an eval split: stop when held-out agreement with the teacher stops "
        "improving, within the step budget (num_train_epochs / max_steps); null trains the whole budget.",
    )
    lora: dict[str, Any] | None = Field(None, description="peft LoraConfig fields; unset trains all weights.")
    sft: dict[str, Any] = Field(default_factory=dict, description="SFTConfig overrides (num_train_epochs, learning_rate...).")
