"""``output:`` — what kind of answer the teacher gives and how to parse it."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section

CODE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def label_code_map(labels: list[str]) -> dict[str, str]:
    """{"A": first label, "B": second, ...}: output.label_codes."""
    return dict(zip(CODE_LETTERS, labels))


class NormalizeConfig(Section):
    """How a label answer is normalised before it is matched against the label set."""

    lowercase: bool = True
    strip: bool = True
    strip_punctuation: bool = True
    first_line_only: bool = True
    prefix_match: bool = Field(
        True, description="Also accept an answer that starts with exactly one label as a whole word ('Positive. Great film')."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict, description="Other answers that mean a label, e.g. {pos: positive, '1': positive}."
    )


class OutputConfig(Section):
    """Parameters that control parsing the teacher's answer."""

    kind: Literal["label", "json", "text"]
    labels: list[str] | None = Field(None, description="label: the fixed label set.")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    calibrate: Literal["none", "prior", "content_free", "em"] = Field(
        "none",
        description="label: reweight every soft label of a run, and take the label as the reweighted argmax: "
        "'content_free' divides by the teacher's label distribution on content-free inputs ('N/A', '', "
        "'[MASK]'; Zhao et al. 2021), keeping the inputs' own class balance; 'em' does that, then re-estimates "
        "the inputs' class prior by EM (Saerens et al. 2002) for imbalanced inputs; 'prior' divides by the "
        "run's mean distribution, which assumes balanced classes. See pipeline/curation/soft_labels.py.",
    )
    calibrate_fallback: bool = Field(
        True,
        description="label, with calibrate content_free or em: when the content-free weights make one label the "
        "answer for at least half of the run and more than twice as often as dividing by the run's mean does, "
        "curate warns and calibrates that dataset version with 'prior' instead (the content-free answers gave "
        "that label too little mass to estimate its bias from). false: keep the configured method.",
    )
    label_codes: bool = Field(
        False,
        description="label: the prompt lists the labels as A), B), C)... (template variable `label_options`) and "
        "the teacher answers one code letter, so one token's top-k logprobs give an exact distribution even when "
        "label names share a prefix (API teachers). The dataset still holds the label names.",
    )
    json_schema: dict[str, Any] | None = Field(None, description="json: a JSON Schema (inline).")
    json_schema_file: str | None = Field(None, description="json: a JSON Schema file in the task folder.")
    min_chars: int = Field(1, ge=0, description="text: shortest acceptable answer.")
    max_chars: int | None = Field(None, ge=1, description="text: longest acceptable answer.")

    @field_validator("labels")
    @classmethod
    def _labels_unique_nonempty(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("the label set is empty; list at least two labels")
        seen: set[str] = set()
        for label in v:
            key = label.strip().lower()
            if not key:
                raise ValueError("a label is blank; remove it")
            if key in seen:
                raise ValueError(f"label '{label}' is repeated; each label must appear once")
            seen.add(key)
        return v

    @model_validator(mode="after")
    def _aliases_name_labels(self) -> OutputConfig:
        for alias, label in self.normalize.aliases.items():
            if self.labels is not None and label not in self.labels:
                raise ValueError(f"normalize.aliases: '{alias}' maps to '{label}', which is not in labels {self.labels}")
        return self

    def answer_normalize(self) -> NormalizeConfig:
        """How an answer is matched to a label: ``normalize``, plus the code letters as aliases when
        ``label_codes`` is on ("B" and "B)" mean the second label)."""
        if not self.label_codes:
            return self.normalize
        aliases = {**label_code_map(self.labels or []), **self.normalize.aliases}
        return self.normalize.model_copy(update={"aliases": aliases})

    @model_validator(mode="after")
    def _codes_fit(self) -> OutputConfig:
        if self.label_codes and len(self.labels or []) > len(CODE_LETTERS):
            raise ValueError(f"label_codes: at most {len(CODE_LETTERS)} labels get a code letter; "
                             f"this task has {len(self.labels or [])}")
        return self

    @model_validator(mode="after")
    def _kind_needs(self) -> OutputConfig:
        if self.kind == "label" and not self.labels:
            raise ValueError("kind 'label' needs 'labels', the fixed label set")
        if self.kind == "json" and self.json_schema is None and self.json_schema_file is None:
            raise ValueError("kind 'json' needs 'json_schema' or 'json_schema_file'")
        return self
