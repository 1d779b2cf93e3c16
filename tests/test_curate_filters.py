"""Each filter drops what it should, with a reason, and keeps what it should."""
from __future__ import annotations

import pytest

from pipeline.config.curate import FiltersConfig
from pipeline.curation import filters
from pipeline.errors import ConfigError
from tests.curate_fixtures import make_record, position


def test_truncated_answer_is_dropped_unless_turned_off():
    cut = make_record("a review", "The sentiment of this review is", finish_reason="length")
    assert filters.drop_truncated(cut, FiltersConfig())[0] == "truncated"
    assert filters.drop_truncated(cut, FiltersConfig(drop_truncated=False)) is None
    assert filters.drop_truncated(make_record("a review", "positive"), FiltersConfig()) is None


@pytest.mark.parametrize("answer", [
    "I'm sorry, but I can't help with that.",
    "I apologize, I cannot assist with this request.",
    "As an AI language model, I don't have opinions.",
    "I am unable to comply with that.",
])
def test_refusals_and_apologies_are_dropped(answer):
    reason, detail = filters.drop_refusal(make_record("x", answer), FiltersConfig())
    assert reason == "refusal" and "pattern" in detail


def test_ordinary_answers_are_not_refusals_and_patterns_are_replaceable():
    cfg = FiltersConfig()
    assert filters.drop_refusal(make_record("x", "positive"), cfg) is None
    assert filters.drop_refusal(make_record("x", "The film can't help but charm."), cfg) is None
    custom = FiltersConfig(refusal_patterns=[r"^no comment"])
    assert filters.drop_refusal(make_record("x", "No comment."), custom)[0] == "refusal"
    assert filters.drop_refusal(make_record("x", "I'm sorry"), custom) is None
    assert filters.drop_refusal(make_record("x", "I'm sorry"), FiltersConfig(drop_refusals=False)) is None


def test_length_bounds():
    cfg = FiltersConfig(min_chars=5, max_chars=10)
    assert filters.drop_length(make_record("x", "  abc "), cfg)[0] == "too_short"
    assert filters.drop_length(make_record("x", "abcdefghijkl"), cfg)[0] == "too_long"
    assert filters.drop_length(make_record("x", "abcdefg"), cfg) is None


def test_user_regex_keeps_only_matches_and_exclude_regex_drops_matches():
    keep_digits = FiltersConfig(regex=r"\d")
    assert filters.drop_regex(make_record("x", "no digits"), keep_digits)[0] == "regex_no_match"
    assert filters.drop_regex(make_record("x", "order 42"), keep_digits) is None
    no_urls = FiltersConfig(exclude_regex=r"https?://")
    assert filters.drop_regex(make_record("x", "see http://spam"), no_urls)[0] == "regex_excluded"


def test_invalid_user_regex_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match="filters.regex"):
        filters.check_patterns(FiltersConfig(regex="(unclosed"))


def test_low_mean_logprob_is_dropped_and_missing_logprobs_pass():
    unsure = make_record("x", "positive", logprobs=[position("positive", -2.0, []), position(".", -1.0, [])])
    cfg = FiltersConfig(min_mean_logprob=-1.0)
    reason, detail = filters.drop_low_confidence(unsure, cfg)
    assert reason == "low_mean_logprob" and "-1.500" in detail
    sure = make_record("x", "positive", logprobs=[position("positive", -0.1, [])])
    assert filters.drop_low_confidence(sure, cfg) is None
    assert filters.drop_low_confidence(make_record("x", "positive"), cfg) is None


def test_low_label_probability_is_dropped():
    cfg = FiltersConfig(min_label_prob=0.8)
    assert filters.drop_low_confidence(make_record("x", "positive"), cfg, label_prob=0.55)[0] == "low_label_prob"
    assert filters.drop_low_confidence(make_record("x", "positive"), cfg, label_prob=0.95) is None
