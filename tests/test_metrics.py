"""The evaluation's math on hand-computed cases: every metric, the routing curve and its threshold."""
from __future__ import annotations

import math

import pytest

from pipeline.config.output import OutputConfig
from pipeline.evaluation import metrics as m
from pipeline.evaluation import routing as rt
from pipeline.evaluation.scoring import score_answers

LABELS = ["positive", "negative", "neutral"]


def test_accuracy_counts_an_unparsed_answer_as_wrong():
    assert m.accuracy(["positive", None, "negative", "negative"], ["positive", "negative", "negative", "positive"]) == 0.5


def test_macro_f1_matches_the_hand_computed_per_label_mean():
    gold = ["positive", "positive", "negative", "negative", "neutral"]
    pred = ["positive", "negative", "negative", None, "positive"]
    # positive: tp=1 fp=1 fn=1 -> 2/4 = 0.5; negative: tp=1 fp=1 fn=1 -> 0.5; neutral: tp=0 -> 0
    assert m.macro_f1(pred, gold, LABELS) == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_macro_f1_is_one_for_a_perfect_answer_and_none_without_data():
    assert m.macro_f1(["a", "b"], ["a", "b"], ["a", "b"]) == 1.0
    assert m.macro_f1([], [], ["a", "b"]) is None


def test_agreement_never_counts_two_unparsed_answers_as_agreeing():
    assert m.agreement(["a", None, "b", "c"], ["a", None, "b", "d"]) == 0.5


def test_parse_label_normalises_case_punctuation_and_extra_lines():
    assert m.parse_label("  Positive.\nBecause...", LABELS) == "positive"
    assert m.parse_label("mixed", LABELS) is None


def test_parse_json_object_accepts_a_code_fence_and_rejects_non_objects():
    assert m.parse_json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert m.parse_json_object("[1, 2]") is None
    assert m.parse_json_object("{not json") is None


def test_json_validity_checks_the_schema():
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    assert m.json_validity([{"a": 1}, {"a": "x"}, None, {"b": 2}], schema) == 0.25
    assert m.json_validity([{"b": 2}, None], None) == 0.5


def test_field_exact_match_is_the_share_of_reference_fields_reproduced():
    ref = {"product": "blender", "priority": "high", "order_id": "A-1043", "category": "defect"}
    pred = {"product": "blender", "priority": "low", "order_id": "A-1043", "extra": 1}
    assert m.field_exact_match(pred, ref) == 0.5
    assert m.field_exact_match(None, ref) == 0.0
    assert m.field_exact_match(pred, None) is None


def test_rouge_l_is_the_lcs_f_measure():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 of 6 words each side
    assert m.rouge_l("the cat is on the mat", "the cat sat on the mat") == pytest.approx(5 / 6)
    # precision 2/2, recall 2/4 -> F = 2 * 1 * 0.5 / 1.5
    assert m.rouge_l("quick fox", "the quick brown fox") == pytest.approx(2 / 3)
    assert m.rouge_l(None, "anything") == 0.0


def test_rouge_l_scores_non_latin_words():
    assert m.rouge_l("日本 東京", "日本 東京") == 1.0


def test_percentiles_interpolate_between_ranks_like_numpy():
    xs = [0.1, 0.2, 0.3, 0.4, 1.0]
    assert m.percentile(xs, 50) == pytest.approx(0.3)
    assert m.percentile(xs, 95) == pytest.approx(0.4 + 0.8 * 0.6)  # rank 3.8
    summary = m.latency_summary([2.0, 1.0])
    assert summary == {"p50_s": 1.5, "p95_s": pytest.approx(1.95), "mean_s": 1.5, "n": 2}
    assert m.latency_summary([])["p50_s"] is None


def test_machine_cost_per_1000_requests():
    # 0.36 s per request at $0.50/h: 360 s per 1,000 requests = 0.1 h = $0.05
    assert m.machine_cost_per_1000(0.36, 0.50) == pytest.approx(0.05)


def test_token_cost_is_unknown_not_zero_when_any_price_is_unknown():
    assert m.token_cost_per_1000([0.001, 0.003]) == pytest.approx(2.0)
    assert m.token_cost_per_1000([0.001, None]) is None
    assert m.token_cost_per_1000([]) is None


def test_quality_percent_of_the_teacher():
    assert m.quality_percent(0.8, 0.9) == pytest.approx(88.888, rel=1e-4)
    assert m.quality_percent(0.5, 0.0) is None


def test_label_confidence_renormalises_sequence_probabilities_over_the_labels():
    best, p = rt.label_confidence({"positive": math.log(0.3), "negative": math.log(0.1)})
    assert best == "positive" and p == pytest.approx(0.75)


def test_mean_token_logprob():
    assert rt.mean_token_logprob([-1.0, -2.0, -3.0]) == -2.0
    assert rt.mean_token_logprob([]) == -math.inf


def test_coverage_curve_by_hand():
    conf = [0.9, 0.8, 0.8, 0.6, 0.5]
    student = [1, 1, 0, 1, 0]
    teacher = [1, 1, 1, 0, 1]
    curve = rt.coverage_curve(conf, student, teacher)
    # the two inputs at 0.8 are routed together, so there are four points
    assert [p.threshold for p in curve] == [0.9, 0.8, 0.6, 0.5]
    assert [p.coverage for p in curve] == [0.2, 0.6, 0.8, 1.0]
    assert [p.student_quality for p in curve] == pytest.approx([1.0, 2 / 3, 0.75, 0.6])
    # routed: student's scores on the covered share + teacher's on the rest, over all 5
    assert [p.routed_quality for p in curve] == pytest.approx([4 / 5, 3 / 5, 4 / 5, 3 / 5])


def test_best_threshold_takes_the_largest_share_that_reaches_the_target():
    curve = rt.coverage_curve([0.9, 0.8, 0.8, 0.6, 0.5], [1, 1, 0, 1, 0], [1, 1, 1, 0, 1])
    assert rt.best_threshold(curve, 0.75).threshold == 0.6  # 0.75 at 80% coverage beats 1.0 at 20%
    assert rt.best_threshold(curve, 0.6).coverage == 1.0
    assert rt.best_threshold(curve, 0.99).coverage == 0.2
    never = rt.coverage_curve([0.5, 0.4], [0, 0], [1, 1])
    assert rt.best_threshold(never, 0.5) is None


def test_routed_cost_pays_the_student_always_and_the_teacher_for_the_rest():
    assert rt.routed_cost_per_1000(0.75, 0.02, 1.0) == pytest.approx(0.27)
    assert rt.routed_cost_per_1000(1.0, 0.02, None) == 0.02
    assert rt.routed_cost_per_1000(0.5, 0.02, None) is None


def test_score_answers_against_gold_labels():
    out = OutputConfig(kind="label", labels=["positive", "negative"])
    s = score_answers(out, ["positive", "Negative!", "banana"], ["positive", "positive", "negative"],
                      ["positive", "negative", "negative"])
    assert s.reference == "gold" and s.metric == "accuracy"
    assert s.student_scores == [1.0, 1.0, 0.0] and s.teacher_scores == [1.0, 0.0, 1.0]
    assert s.quality("student") == pytest.approx(2 / 3)
    assert s.student_metrics["agreement_with_teacher"] == pytest.approx(1 / 3)
    assert s.student_metrics["unparsed_rate"] == pytest.approx(1 / 3)


def test_score_answers_without_gold_measures_agreement_and_skips_unparsed_teacher_answers():
    out = OutputConfig(kind="label", labels=["positive", "negative"])
    s = score_answers(out, ["positive", "negative", "positive"], ["positive", "positive", "???"], None)
    assert s.metric == "agreement_with_teacher" and s.reference == "teacher"
    assert s.student_scores == [1.0, 0.0, None] and s.scored == [0, 1]
    assert s.quality("student") == 0.5 and s.quality("teacher") == 1.0


def test_score_answers_for_json_and_text():
    schema = {"type": "object", "required": ["a", "b"]}
    out = OutputConfig(kind="json", json_schema=schema)
    s = score_answers(out, ['{"a": 1, "b": 3}', "oops"], ['{"a": 1, "b": 2}', '{"a": 5, "b": 6}'], None, schema)
    assert s.student_scores == [0.5, 0.0]
    assert s.student_metrics["json_valid"] == 0.5 and s.teacher_metrics["json_valid"] == 1.0
    text = OutputConfig(kind="text")
    s = score_answers(text, ["quick fox"], ["the quick brown fox"], ["the quick brown fox"])
    assert s.student_scores == [pytest.approx(2 / 3)] and s.teacher_scores == [1.0]


def test_gap_closed_and_kappa_on_hand_computed_cases():
    from pipeline.evaluation.metrics import cohen_kappa, gap_closed, majority_share

    gold = ["pos"] * 6 + ["neg"] * 4
    assert majority_share(gold) == ("pos", 0.6)
    # teacher 0.8, student 0.7, baseline 0.6: half the margin
    assert gap_closed(0.7, 0.8, 0.6) == pytest.approx(0.5)
    assert gap_closed(0.55, 0.8, 0.6) == pytest.approx(-0.25)  # below the baseline: negative, not "x% of quality"
    assert gap_closed(0.7, 0.6, 0.6) is None  # no margin to close
    # kappa: 8/10 agree; both say pos 5 times: p_e = 0.5*0.5 + 0.5*0.5 = 0.5 -> (0.8 - 0.5) / 0.5
    a = ["pos"] * 5 + ["neg"] * 5
    b = ["pos"] * 4 + ["neg"] + ["pos"] + ["neg"] * 4
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert cohen_kappa(["pos"] * 4, ["pos"] * 4) == 1.0


def test_routing_threshold_is_chosen_on_one_half_and_measured_on_the_other():
    from pipeline.evaluation.routing import held_out_threshold

    # ids ending in an even hex digit choose, odd ones report. On the choosing half the student is
    # right whenever confident; on the reporting half it is wrong there: the report must show that.
    ids = [f"{i:015x}{d}" for i, d in enumerate("02468ace13579bdf")]
    conf = [0.9] * 4 + [0.1] * 4 + [0.9] * 4 + [0.1] * 4
    student = [1.0] * 4 + [0.0] * 4 + [0.0] * 4 + [1.0] * 4
    teacher = [1.0] * 16
    out = held_out_threshold(range(16), ids, conf, student, teacher, target=1.0)
    assert out["chosen_on"] == 8 and out["reported_on"] == 8
    point = out["point"]
    assert point.threshold == 0.9 and point.coverage == 0.5 and point.student_quality == 0.0


def _report(student: float, teacher: float, baseline: float, gap) -> dict:
    return {"quality": {"metric": "accuracy", "student": student, "teacher": teacher}, "reference": "gold",
            "headline": {"gap_closed": gap, "majority_baseline": baseline, "majority_label": "positive",
                         "agreement": 0.5, "kappa": 0.0,
                         "verdict": ("student_at_or_below_baseline" if student <= baseline else
                                     "teacher_at_or_below_baseline" if teacher <= baseline else "above_baseline")}}


def test_the_headline_never_calls_a_baseline_student_a_share_of_the_teacher():
    from pipeline.evaluation.report import headline_sentence

    low = headline_sentence(_report(0.52, 0.60, 0.52, 0.0))
    assert "at or below the majority-class baseline 52.0%" in low and "of the teacher's quality" not in low
    good = headline_sentence(_report(0.59, 0.60, 0.52, 0.875))
    assert good.startswith("The student closes 87.5% of the teacher's margin over the majority-class baseline")
    flat = headline_sentence(_report(0.55, 0.50, 0.52, None))
    assert "no margin to distil" in flat


def test_a_teacher_margin_of_a_few_inputs_is_called_chance_not_a_gap_to_close():
    """The 3-class tweets of bench/unseen_data.py's kind: the teacher 54.6% against always 'positive'
    53.0% on 500 inputs, and a student at 55.8% read "closes 175.0% of the teacher's margin". McNemar
    on the teacher's answers against the constant ones decides whether there is a margin at all."""
    from pipeline.evaluation.metrics import margin_over_constant
    from pipeline.evaluation.report import headline_sentence
    from pipeline.evaluation.scoring import Scored
    from pipeline.stages.evaluate import headline_figures

    assert margin_over_constant([1, 1, 0, 0, 1], ["a", "b", "a", "b", "b"], "a") == {
        "only_model_right": 2, "only_constant_right": 1, "beyond_chance": False}

    def scored(teacher_right: list[bool], golds: list[str], student_right: list[bool]) -> Scored:
        other = {"positive": "negative", "negative": "positive", "neutral": "positive"}
        t = [g if ok else other[g] for g, ok in zip(golds, teacher_right)]
        st = [g if ok else other[g] for g, ok in zip(golds, student_right)]
        return Scored("accuracy", "gold", st, t, [float(x) for x in student_right], [float(x) for x in teacher_right],
                      {}, {}, golds)

    golds = ["positive"] * 265 + ["negative"] * 150 + ["neutral"] * 85  # 53.0% positive
    # the teacher: right on 200 positives and 73 others (54.6%); the student: 279 right (55.8%)
    teacher = [i < 200 for i in range(265)] + [i < 73 for i in range(235)]
    student = [i < 200 for i in range(265)] + [i < 79 for i in range(235)]
    h = headline_figures(scored(teacher, golds, student), "label")
    assert h["teacher"] == pytest.approx(0.546) and h["majority_baseline"] == pytest.approx(0.53)
    assert h["verdict"] == "teacher_margin_within_chance" and h["gap_closed"] is None
    assert h["teacher_margin"] == {"only_model_right": 73, "only_constant_right": 65, "beyond_chance": False}
    line = headline_sentence({"quality": {"metric": "accuracy", "student": h["student"], "teacher": h["teacher"]},
                              "reference": "gold", "headline": h})
    assert "margin over the majority-class baseline 53.0% ('positive' always) is within chance" in line
    assert "175" not in line and "closes" not in line
    # a margin well beyond chance (the teacher right on 120 more of the others) is one to close
    teacher = [i < 200 for i in range(265)] + [i < 193 for i in range(235)]
    h = headline_figures(scored(teacher, golds, student), "label")
    assert h["verdict"] == "above_baseline" and h["gap_closed"] == pytest.approx((0.558 - 0.53) / (0.786 - 0.53))
    # a student above its teacher is said to be, not to close more than all of the gap
    better = headline_sentence(_report(0.70, 0.60, 0.52, (0.70 - 0.52) / (0.60 - 0.52)))
    assert better.startswith("The student does better than the teacher over the majority-class baseline 52.0%")


def test_routing_that_costs_more_than_the_teacher_says_send_everything_to_the_teacher():
    from pipeline.evaluation.routing import routing_pays

    assert routing_pays(0.004, 0.61, 0.005, 0.60) is True
    assert routing_pays(0.0066, 0.615, 0.0047, 0.60) is False  # dearer than the teacher alone
    assert routing_pays(0.002, 0.55, 0.005, 0.60) is False  # cheaper, but loses quality


def test_per_label_counts_where_the_student_falls_short_on_a_hand_computed_case():
    """tweets3's kind: the teacher answers 'neutral' where the student never does."""
    from pipeline.evaluation.metrics import per_label
    from pipeline.evaluation.report import _per_label_table

    labels = ["negative", "neutral", "positive"]
    teacher = ["negative", "negative", "neutral", "neutral", "neutral", "positive", "positive", None]
    student = ["negative", "positive", "positive", "positive", None, "positive", "positive", "negative"]
    gold = ["negative", "neutral", "neutral", "neutral", "positive", "positive", "negative", "negative"]
    rows = {r["label"]: r for r in per_label(labels, teacher, student, gold)}
    assert rows["negative"] == {"label": "negative", "gold": 3, "teacher": 2, "student": 2, "student_agrees": 0.5,
                                "teacher_agrees": 0.5, "student_instead": {"answer": "positive", "count": 1}}
    assert rows["positive"]["teacher_agrees"] == 0.4  # 2 of the student's 5 "positive"
    assert rows["neutral"]["teacher_agrees"] is None  # the student never answers it
    assert rows["neutral"]["student"] == 0 and rows["neutral"]["student_agrees"] == 0.0
    assert rows["neutral"]["student_instead"] == {"answer": "positive", "count": 2}  # not the unparsed one
    assert rows["positive"]["student_agrees"] == 1.0 and rows["positive"]["student_instead"] is None
    assert per_label(["a", "b"], ["a"], ["a"])[1]["student_agrees"] is None  # the teacher never answers b

    md = "\n".join(_per_label_table({"per_label": list(rows.values())}))
    assert "| neutral | 3 | 3 | 0 | 0.0% | n/a | positive (2) |" in md
    assert "| positive | 2 | 2 | 5 | 100.0% | 40.0% |  |" in md
    assert md.index("| neutral |") < md.index("| negative |")  # the teacher's most frequent labels first
    many = [{**rows["positive"], "label": f"l{i}", "teacher": i} for i in range(25)]
    md = "\n".join(_per_label_table({"per_label": many}))
    assert "| l24 |" in md and "| l4 |" not in md and "5 more labels in report.json" in md
