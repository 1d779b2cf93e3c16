"""Filters over one teacher answer. Each returns None (keep) or ``(reason, detail)`` (drop).

Every filter has the same shape, ``filter(record, cfg) -> Drop | None``, so the stage runs them in
order and logs the first that drops a record. The reasons are the keys of the manifest's
``counts.rejected``.
"""
from __future__ import annotations

import re
from functools import lru_cache

from pipeline.config.curate import FiltersConfig
from pipeline.errors import ConfigError
from pipeline.records import Record

Drop = tuple[str, str]

# Openings and stock phrases of refusals and apologies, as chat models write them. Matched
# case-insensitively anywhere in the answer; replace with filters.refusal_patterns.
DEFAULT_REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid)\b",
    r"\bI apologi[sz]e\b",
    (r"\bI (?:cannot|can't|can ?not|won't|will not|am unable to|'m unable to|am not able to) "
     r"(?:help|assist|comply|provide|fulfil|fulfill|answer|do that|complete)"),
    r"\bas an AI\b",
    r"\bas a language model\b",
    r"\bI(?:'m| am) (?:just )?an AI\b",
    r"\bI must (?:decline|refuse)\b",
    r"\bunable to (?:comply|assist) with\b",
]


@lru_cache(maxsize=64)
def compile_pattern(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"task.yaml: {where}: invalid regex {pattern!r} ({exc}); fix the pattern") from None


def check_patterns(cfg: FiltersConfig) -> None:
    """Compile every configured regex once, so a bad one fails before any record is read."""
    for i, pat in enumerate(cfg.refusal_patterns or []):
        compile_pattern(pat, f"filters.refusal_patterns[{i}]")
    if cfg.regex:
        compile_pattern(cfg.regex, "filters.regex")
    if cfg.exclude_regex:
        compile_pattern(cfg.exclude_regex, "filters.exclude_regex")


def mean_token_logprob(record: Record) -> float | None:
    if not record.logprobs:
        return None
    return sum(p.logprob for p in record.logprobs) / len(record.logprobs)


def drop_truncated(record: Record, cfg: FiltersConfig) -> Drop | None:
    if cfg.drop_truncated and record.finish_reason == "length":
        return "truncated", "finish_reason 'length': the answer hit max_tokens"
    return None


def drop_refusal(record: Record, cfg: FiltersConfig) -> Drop | None:
    if not cfg.drop_refusals:
        return None
    patterns = cfg.refusal_patterns if cfg.refusal_patterns is not None else DEFAULT_REFUSAL_PATTERNS
    for i, pat in enumerate(patterns):
        m = compile_pattern(pat, f"filters.refusal_patterns[{i}]").search(record.completion)
        if m:
            return "refusal", f"matches refusal pattern {pat!r} at {m.group(0)!r}"
    return None


def drop_length(record: Record, cfg: FiltersConfig) -> Drop | None:
    n = len(record.completion.strip())
    if cfg.min_chars is not None and n < cfg.min_chars:
        return "too_short", f"{n} characters < filters.min_chars {cfg.min_chars}"
    if cfg.max_chars is not None and n > cfg.max_chars:
        return "too_long", f"{n} characters > filters.max_chars {cfg.max_chars}"
    return None


def drop_regex(record: Record, cfg: FiltersConfig) -> Drop | None:
    if cfg.regex and not compile_pattern(cfg.regex, "filters.regex").search(record.completion):
        return "regex_no_match", f"does not match filters.regex {cfg.regex!r}"
    if cfg.exclude_regex:
        m = compile_pattern(cfg.exclude_regex, "filters.exclude_regex").search(record.completion)
        if m:
            return "regex_excluded", f"matches filters.exclude_regex at {m.group(0)!r}"
    return None


def drop_low_confidence(record: Record, cfg: FiltersConfig, label_prob: float | None = None) -> Drop | None:
    """Teacher confidence: the mean token logprob, and for labels the probability the teacher gave
    its own label (before renormalising over the label set). A record without logprobs passes:
    there is no evidence either way, and the stage counts such records."""
    if cfg.min_mean_logprob is not None:
        mean = mean_token_logprob(record)
        if mean is not None and mean < cfg.min_mean_logprob:
            return "low_mean_logprob", f"mean token logprob {mean:.3f} < filters.min_mean_logprob {cfg.min_mean_logprob}"
    if cfg.min_label_prob is not None and label_prob is not None and label_prob < cfg.min_label_prob:
        return "low_label_prob", f"label probability {label_prob:.3f} < filters.min_label_prob {cfg.min_label_prob}"
    return None


# Run before parsing: a refusal or a cut-off answer is reported as such, not as a parse failure.
PRE_PARSE = (drop_truncated, drop_refusal)
POST_PARSE = (drop_length, drop_regex)
