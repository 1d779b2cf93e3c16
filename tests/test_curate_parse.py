"""Parsing answers: labels with soft labels from logprobs, JSON with trivial repair, text bounds."""
from __future__ import annotations

import math

import jsonschema
import pytest

from pipeline.config.output import NormalizeConfig
from pipeline.curation.parse import parse_json, parse_label, parse_text, soft_label_from_logprobs
from tests.curate_fixtures import negative_first_token, position, positive_first_token

LABELS = ["positive", "negative"]
NORM = NormalizeConfig()


@pytest.mark.parametrize("answer", ["positive", " Positive", "POSITIVE.", "Positive\nBecause the acting...",
                                    "positive sentiment", "**Positive**"])
def test_label_variants_match_after_normalisation(answer):
    assert parse_label(answer, LABELS, NORM).value == "positive"


def test_unknown_label_is_rejected_with_the_answer_in_the_detail():
    parsed = parse_label("neutral", LABELS, NORM)
    assert parsed.reason == "label_unknown" and "neutral" in parsed.detail


def test_prefix_match_can_be_turned_off_and_aliases_map_answers():
    assert parse_label("positive sentiment", LABELS, NormalizeConfig(prefix_match=False)).reason == "label_unknown"
    assert parse_label("pos", LABELS, NormalizeConfig(aliases={"pos": "positive"})).value == "positive"


def test_soft_label_sums_case_and_space_variants_and_renormalises_over_the_labels():
    soft, mass = soft_label_from_logprobs(positive_first_token(), LABELS)
    p_pos = math.exp(-0.15) + math.exp(-2.6) + math.exp(-4.1)
    p_neg = math.exp(-3.2)
    assert soft["positive"] == pytest.approx(p_pos / (p_pos + p_neg))
    assert soft["negative"] == pytest.approx(p_neg / (p_pos + p_neg))
    assert sum(soft.values()) == pytest.approx(1.0)
    assert mass == pytest.approx(p_pos + p_neg)  # 'neutral' is not a label: its mass is left out


def test_soft_label_counts_a_partial_token_for_the_one_label_it_starts():
    soft, _ = soft_label_from_logprobs(negative_first_token(), LABELS)
    expected_neg = math.exp(-0.05) + math.exp(-3.9) + math.exp(-6.0)  # " neg" is the start of negative only
    assert soft["negative"] == pytest.approx(expected_neg / (expected_neg + math.exp(-4.4)))


def test_multi_token_labels_read_the_next_position_when_the_first_token_is_shared():
    labels = ["very positive", "very negative", "neutral"]
    positions = [
        position(" very", -0.2, [(" very", -0.2), ("neutral", -1.8)]),
        position(" positive", -0.4, [(" positive", -0.4), (" negative", -1.1)]),
    ]
    soft, _ = soft_label_from_logprobs(positions, labels)
    p_very = math.exp(-0.2)
    raw = {"very positive": p_very * math.exp(-0.4), "very negative": p_very * math.exp(-1.1), "neutral": math.exp(-1.8)}
    total = sum(raw.values())
    for label in labels:
        assert soft[label] == pytest.approx(raw[label] / total)


def test_leading_newline_token_is_skipped_before_reading_the_label():
    positions = [position("\n", -0.01, [("\n", -0.01)])] + positive_first_token()
    soft, _ = soft_label_from_logprobs(positions, LABELS)
    assert soft["positive"] > 0.9


def test_no_logprobs_or_no_label_in_the_top_k_gives_none():
    assert soft_label_from_logprobs(None, LABELS) is None
    assert soft_label_from_logprobs([position("The", -0.1, [("The", -0.1), ("This", -2.0)])], LABELS) is None


SCHEMA = {"type": "object", "properties": {"priority": {"enum": ["low", "high"]}, "order_id": {"type": "string"}},
          "required": ["priority"]}
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_json_in_a_code_fence_is_repaired_and_its_span_points_inside_the_fence():
    answer = 'Here you go:\n```json\n{"priority": "high", "order_id": "A1"}\n```\nAnything else?'
    parsed = parse_json(answer, VALIDATOR)
    assert parsed.value == {"priority": "high", "order_id": "A1"}
    assert parsed.repair == "code_fence"
    assert answer[parsed.span[0]:parsed.span[1]] == '{"priority": "high", "order_id": "A1"}'


def test_json_with_leading_and_trailing_prose_is_repaired():
    parsed = parse_json('Sure! {"priority": "low"} Hope this helps.', VALIDATOR)
    assert parsed.value == {"priority": "low"} and parsed.repair == "surrounding_prose"
    clean = parse_json('{"priority": "low"}', VALIDATOR)
    assert clean.value == {"priority": "low"} and clean.repair is None


def test_broken_json_and_schema_violations_are_rejected_with_where():
    assert parse_json('{"priority": "low"', VALIDATOR).reason == "json_invalid"
    assert parse_json("no json here", VALIDATOR).reason == "json_invalid"
    bad = parse_json('{"priority": "urgent"}', VALIDATOR)
    assert bad.reason == "json_schema" and "priority" in bad.detail


def test_text_length_bounds():
    assert parse_text("  a fine summary  ", 5, 100).value == "a fine summary"
    assert parse_text("tiny", 5, None).reason == "text_too_short"
    assert parse_text("x" * 50, 1, 20).reason == "text_too_long"


def test_a_label_that_is_the_prefix_of_another_is_read_when_the_answer_ends_there():
    labels = ["no", "not sure", "yes"]
    soft, _ = soft_label_from_logprobs([position("no", -0.3, [("no", -0.3), ("yes", -1.5)])], labels)
    total = math.exp(-0.3) + math.exp(-1.5)
    assert soft["no"] == pytest.approx(math.exp(-0.3) / total) and soft["not sure"] == 0.0


def test_an_alias_and_its_label_are_not_ambiguous():
    soft, _ = soft_label_from_logprobs([position("pos", -0.1, [("pos", -0.1), ("neg", -2.3)])], LABELS,
                                       {"pos": "positive", "neg": "negative"})
    assert soft["positive"] == pytest.approx(math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.3)))
