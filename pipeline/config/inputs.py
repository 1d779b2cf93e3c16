"""``inputs:`` — where the task's inputs come from: a file, or the teacher writes them."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section, as_text


class GroupSplitConfig(Section):
    """Parameters that control splitting a source by group, so that related rows (the snippets of one
    movie, the posts of one user) never sit on both sides: the transfer set takes one side, the
    evaluation the other. A group's side is a hash of its value, so it never changes between runs."""

    field: str = Field(description="Column holding the group (a column of the file, or a variable of source.fields); "
                       "a column the template reads splits by row, its words case-folded.")
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Share of groups held out.")
    keep: Literal["rest", "holdout"] = Field(
        description="'rest' (the transfer set: inputs.source) or 'holdout' (the evaluation: eval.source).")


class SourceConfig(Section):
    """Parameters that control reading inputs from JSONL, JSON, CSV, text or Parquet files or an on-disk HF dataset."""

    path: str = Field(description="File or folder, relative to the task folder (or absolute), or a glob pattern "
                      "(logs/*.jsonl, data/train-*.parquet, posts/**/*.csv): every file it matches, in name order.")
    format: Literal["jsonl", "json", "csv", "txt", "parquet", "hf"] | None = Field(
        None, description="Inferred from the extension when unset (.jsonl, .json: an array of objects or JSON "
        "lines, .csv / .tsv, .txt: one input a line in the column text, .parquet as the Hub serves datasets, "
        "a folder saved with save_to_disk: hf; .gz or .bz2 after any but .parquet is decompressed).")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Template variable -> column name, or a path into nested JSON (request.messages[-1].content). "
        "Columns not named here are dropped.",
    )
    split: str | None = Field(None, description="hf only: the split of a saved DatasetDict.")
    limit: int | None = Field(None, ge=1, description="Use only the first N inputs.")
    where: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Keep only rows whose column value is one of these (column or variable of fields -> values)."
    )

    @field_validator("where", mode="before")
    @classmethod
    def _where_values_as_text(cls, where: object) -> object:
        """``where: {is_spam: [true]}`` keeps the rows whose value is a boolean true, ``[1]`` those whose
        value is 1 or 1.0 (``as_text``)."""
        if isinstance(where, dict):
            return {k: [as_text(v) if isinstance(v, (bool, str, int, float)) else v for v in vals] if isinstance(vals, list) else vals
                    for k, vals in where.items()}
        return where

    group_split: GroupSplitConfig | None = Field(
        None, description="Keep one side of a split by group (e.g. movie), applied after `where`.")
    sample: int | None = Field(
        None, ge=1,
        description="Use N rows spread over the whole file (a fixed hash order), after where and group_split; "
        "unlike `limit` (the first N), a file grouped by topic still gives every topic.")


class GenerateInputsConfig(Section):
    """Parameters that control teacher-written inputs: seed lists x an attribute grid (self-instruct)."""

    template: str = Field("generate_input.j2", description="Template for the request that writes one input.")
    field: str = Field("text", description="The input field the teacher's answer fills.")
    seeds: dict[str, list[str]] = Field(default_factory=dict, description="Variable -> seed values.")
    grid: dict[str, list[str]] = Field(default_factory=dict, description="Attribute -> values, crossed with seeds.")
    count: int = Field(100, ge=1, description="Target number of inputs; combinations are cycled with a variant index.")
    params: dict | None = Field(None, description="Sampling params for this pass (default: the teacher's, temperature 1.0).")


class InputsConfig(Section):
    """``source`` (real inputs), ``generate`` (teacher-written ones), or both: the real inputs, then
    ``generate.count`` written ones mixed in, answered and curated together."""

    source: SourceConfig | None = None
    generate: GenerateInputsConfig | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> InputsConfig:
        if self.source is None and self.generate is None:
            raise ValueError("set 'source' (a file), 'generate' (teacher-written inputs), or both")
        return self
