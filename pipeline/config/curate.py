"""``filters:``, ``dedupe:``, ``decontam:``, ``split:`` — read by the curate stage."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Section


class FiltersConfig(Section):
    """Parameters that control which parsed answers are kept. Every drop is logged with its reason."""

    min_chars: int | None = Field(None, ge=0, description="Drop answers shorter than this.")
    max_chars: int | None = Field(None, ge=1, description="Drop answers longer than this.")
    drop_refusals: bool = Field(True, description="Drop answers matching refusal/apology patterns.")
    refusal_patterns: list[str] | None = Field(None, description="Regexes that replace the built-in refusal list.")
    drop_truncated: bool = Field(True, description="Drop answers whose finish_reason is 'length'.")
    min_mean_logprob: float | None = Field(None, le=0, description="Drop answers below this mean token logprob.")
    min_label_prob: float | None = Field(None, ge=0, le=1, description="label: drop below this label probability.")
    regex: str | None = Field(None, description="Keep only answers matching this regex.")
    exclude_regex: str | None = Field(None, description="Drop answers matching this regex.")


class DedupeConfig(Section):
    """Parameters that control exact and near-duplicate removal (MinHash LSH, rensa).

    The defaults (2-word shingles, threshold 0.5, 128 permutations, 32 bands of 4) catch rewrites
    with 5-15% of the words changed and sentences reordered, which the usual 5-word shingles at a
    0.7-0.8 threshold miss almost entirely; bench/dedupe.py measures both and docs/curate.md says why."""

    enabled: bool = True
    compare: Literal["input", "output", "both"] = Field("input", description="Which text is compared: the input, the answer, or both.")
    fields: list[str] | None = Field(
        None,
        description="Input fields compared (when compare is input or both); default: the teacher-written "
        "field with inputs.generate, else every string field.",
    )
    exact: bool = Field(True, description="Remove duplicates of the normalised text (case, whitespace, Unicode form).")
    near: bool | None = Field(
        None, description="Remove near duplicates with MinHash LSH. Default: on where the compared text is "
        "the teacher's (inputs.generate, or compare output / both), off for the user's own inputs alone: "
        "they are the distribution the student will serve, and their answers are paid for.",
    )
    threshold: float = Field(
        0.5, gt=0, le=1, description="Estimated Jaccard similarity of the shingle sets at or above which two are duplicates."
    )
    shingle_size: int = Field(2, ge=1, description="Words per shingle (a text with fewer words is one shingle).")
    min_words: int = Field(
        8, ge=1, description="Texts shorter than this are near duplicates only with the same words in the same "
        "order (punctuation aside; emoticons and emoji are words): one changed word is a small edit of a long "
        "text but a new short one.",
    )
    num_perm: int = Field(128, ge=16, description="MinHash permutations (signature length).")
    num_bands: int | None = Field(
        None, ge=1, description="LSH bands (must divide num_perm); default: chosen from threshold and num_perm."
    )

    @model_validator(mode="after")
    def _bands_divide_perms(self) -> DedupeConfig:
        if self.num_bands is not None and self.num_perm % self.num_bands:
            raise ValueError(f"num_bands {self.num_bands} must divide num_perm {self.num_perm} (e.g. 16, 32, 64)")
        return self


class DecontamConfig(Section):
    """Parameters that control removing examples that overlap the eval inputs."""

    enabled: bool = True
    ngram: int = Field(13, ge=1, description="n-gram length (words) compared.")
    extra_files: list[str] = Field(default_factory=list, description="More JSONL/CSV/text files to decontaminate against.")
    field: str | None = Field(None, description="Column of the extra files holding the text (default: all strings).")


class SplitConfig(Section):
    """Parameters that control the deterministic train/eval split."""

    eval_fraction: float = Field(0.1, ge=0, lt=1, description="Share of examples held out for eval.")
    seed: str = Field("distill", description="Salt of the split hash; change it for another split.")
    stratify: bool = Field(True, description="label tasks: split each label separately.")
