"""`distill validate` checks what the later stages need of each other, before anything is paid for:
the training method against the teacher's answers, the student, max_length, the eval source."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_validate import base_config, run_validate, write_task

# prompts/summarize/task.yaml as it shipped before issue 12: valid section by section, yet train
# failed after the teacher had been paid (KD on text needs token ids an API teacher never gives).
SUMMARIZE_BEFORE_ISSUE_12 = """\
name: summarize
description: Summarise a short news article in one sentence.
teacher:
  backend: openai
  model: gpt-4o-mini
  params: {temperature: 0.3, max_tokens: 80}
  top_logprobs: 5
  budget: {max_cost_usd: 2.0}
inputs:
  source:
    path: inputs.csv
    fields: {article: text, title: title}
output: {kind: text, min_chars: 20, max_chars: 400}
filters: {min_chars: 20}
dedupe: {compare: both}
student: {init: pretrained, model: smollm2-135m-instruct}
train:
  method: kd
  temperature: 2.0
"""


def errors(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("error:")]


def warnings(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("warning:")]


def test_summarize_as_shipped_before_the_fix_fails_with_one_line_naming_train_method(task_copy, capsys):
    folder = task_copy("summarize")
    (folder / "task.yaml").write_text(SUMMARIZE_BEFORE_ISSUE_12, encoding="utf-8")
    rc, lines = run_validate(folder, capsys)
    assert rc != 0
    assert len(errors(lines)) == 1, lines
    assert "train.method" in errors(lines)[0] and "set train.method: sft" in errors(lines)[0]


def test_label_level_kd_on_a_json_task_names_kd_level(tmp_path, capsys):
    cfg = base_config(output={"kind": "json", "json_schema": {"type": "object"}},
                      train={"method": "kd", "kd_level": "label"})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and len(errors(lines)) == 1 and "train.kd_level" in errors(lines)[0]


def test_token_kd_with_a_student_of_another_tokenizer_is_an_error(tmp_path, capsys, tiny_model_dir):
    from tests.tiny_models import build_tiny_model

    other = build_tiny_model(tmp_path / "other", vocab_size=300)
    cfg = base_config(teacher={"backend": "hf", "model": str(tiny_model_dir), "top_logprobs": 5},
                      output={"kind": "text"}, student={"init": "pretrained", "model": str(other)})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and "train.method" in errors(lines)[0] and "tokenizer" in errors(lines)[0]

    cfg["student"]["model"] = str(tiny_model_dir)  # the teacher's own tokenizer: token-level KD works
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc == 0, lines


def test_kd_on_labels_without_logprobs_is_called_cross_entropy(tmp_path, capsys, tiny_model_dir):
    cfg = base_config(teacher={"backend": "anthropic", "model": "claude-haiku-4-5", "base_url": "http://127.0.0.1:9"},
                      student={"init": "pretrained", "model": str(tiny_model_dir)}, train={"method": "kd"})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc == 0
    assert any("train.method" in w and "plain cross-entropy" in w for w in warnings(lines)), lines


def test_a_student_folder_that_does_not_exist_is_an_error(tmp_path, capsys):
    cfg = base_config(student={"init": "pretrained", "model": str(tmp_path / "nowhere")})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("student.model" in e and "nowhere" in e for e in errors(lines))


def test_a_misspelt_sft_setting_is_caught_before_generate(tmp_path, capsys):
    cfg = base_config(train={"method": "sft", "sft": {"num_train_epoch": 1}})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("train.sft" in e and "num_train_epochs" in e for e in errors(lines))


def test_text_for_a_number_in_train_sft_is_caught_before_generate(tmp_path, capsys):
    """`learning_rate: 1e-4` is a number (YAML 1.2); `learning_rate: fast` would reach SFTConfig as text."""
    cfg = base_config(train={"method": "sft", "sft": {"learning_rate": "fast"}})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("train.sft: learning_rate: 'fast' is not a number" in e for e in errors(lines))
    folder = write_task(tmp_path / "u", base_config(train={"method": "sft"}))
    text = (folder / "task.yaml").read_text().replace("method: sft", "method: sft\n  sft: {learning_rate: 1e-4, run_name: 1e}")
    assert "learning_rate: 1e-4" in text
    (folder / "task.yaml").write_text(text)
    rc, lines = run_validate(folder, capsys)
    assert not errors(lines), lines


def test_no_eval_source_and_no_held_out_split_leaves_evaluate_nothing(tmp_path, capsys):
    cfg = base_config(split={"eval_fraction": 0.0}, train={"method": "sft"})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0 and any("split.eval_fraction" in e and "eval.source" in e for e in errors(lines))


def test_eval_rows_must_fill_the_prompt_template(tmp_path, capsys):
    cfg = base_config(eval={"source": {"path": "eval.jsonl"}}, train={"method": "sft"})
    folder = write_task(tmp_path / "t", cfg, {"eval.jsonl": '{"review": "fine"}\n'})
    rc, lines = run_validate(folder, capsys)
    assert rc != 0 and any("eval.source" in e and "'text' is undefined" in e for e in errors(lines))


def test_eval_gold_labels_outside_the_label_set_are_an_error(tmp_path, capsys):
    cfg = base_config(eval={"source": {"path": "eval.jsonl"}, "gold_field": "gold", "gold_map": {"y": "yes"}},
                      train={"method": "sft"})
    rows = '{"text": "a", "gold": "y"}\n{"text": "b", "gold": "no"}\n{"text": "c", "gold": "SearchCreativeWork"}\n'
    rc, lines = run_validate(write_task(tmp_path / "t", cfg, {"eval.jsonl": rows}), capsys)
    assert rc != 0
    (err,) = errors(lines)
    assert "eval.gold_field" in err and "1 of 3" in err and "'SearchCreativeWork'" in err and "eval.gold_map" in err


def long_inputs(n: int, words: int) -> str:
    return "".join(f'{{"text": "{" ".join(["word"] * words)} {i}"}}\n' for i in range(n))


@pytest.mark.parametrize("long_rows, expect_error", [(10, True), (1, False)])
def test_max_length_shorter_than_the_prompts_is_estimated_before_generate(tmp_path, capsys, long_rows, expect_error):
    cfg = base_config(train={"method": "sft", "sft": {"max_length": 256}})
    inputs = long_inputs(long_rows, 400) + long_inputs(100 - long_rows, 5)
    rc, lines = run_validate(write_task(tmp_path / "t", cfg, {"inputs.jsonl": inputs}), capsys)
    found = [ln for ln in lines if "train.sft.max_length" in ln]
    assert len(found) == 1, lines
    assert f"{long_rows} of 100" in found[0] and "set train.sft.max_length: " in found[0]
    fits = int(found[0].rsplit(": ", 1)[1])
    assert fits > 256 and fits % 64 == 0
    assert (rc != 0) is expect_error and found[0].startswith("error:" if expect_error else "warning:")


@pytest.mark.parametrize("kind, flagged", [("label", False), ("text", True)])
def test_a_label_tasks_answer_is_its_longest_label_not_max_tokens(tmp_path, capsys, kind, flagged):
    """Prompts of ~230 tokens and max_length 256: a label task trains on the label (a few tokens), so it
    fits; a text task may get max_tokens' 64 more, so it does not."""
    output = {"kind": "label", "labels": ["yes", "no"]} if kind == "label" else {"kind": "text"}
    cfg = base_config(output=output, train={"method": "sft", "sft": {"max_length": 256}})
    _, lines = run_validate(write_task(tmp_path / "t", cfg, {"inputs.jsonl": long_inputs(20, 176)}), capsys)
    found = [ln for ln in lines if "train.sft.max_length" in ln]
    assert bool(found) is flagged, lines
    if flagged:
        assert "answers up to 64 tokens" in found[0]


def test_bundled_summarize_now_trains_with_sft(capsys):
    rc, lines = run_validate(Path(__file__).resolve().parent.parent / "prompts" / "summarize", capsys)
    assert rc == 0 and not errors(lines)


def test_curate_settings_that_would_fail_after_generate_are_errors_now(tmp_path, capsys):
    cfg = base_config(filters={"regex": "([unclosed"}, dedupe={"fields": ["body"]}, train={"method": "sft"})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc != 0
    assert any("filters.regex" in e and "invalid regex" in e for e in errors(lines))
    assert any("dedupe.fields" in e and "['body']" in e for e in errors(lines))


def test_an_hourly_price_for_an_api_teacher_is_a_warning(tmp_path, capsys):
    cfg = base_config(teacher={"backend": "openai", "model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9"},
                      eval={"teacher_price_per_hour": 1.0}, train={"method": "sft"})
    rc, lines = run_validate(write_task(tmp_path / "t", cfg), capsys)
    assert rc == 0 and any("eval.teacher_price_per_hour" in w for w in warnings(lines))


@pytest.mark.parametrize("labels, rows, warned", [(77, 465, True), (2, 40, False), (7, 40, True), (7, 100, False)])
def test_too_few_inputs_a_label_is_a_warning_naming_how_many_to_give(tmp_path, capsys, labels, rows, warned):
    """The 77-intent run of docs/label-distillation.md: 465 inputs, 4.7 training rows a label after
    dedupe, a student at 22.5% agreement. validate says so before the teacher is paid."""
    from pipeline.stages.cross_checks import MIN_ROWS_PER_LABEL

    folder = write_task(tmp_path / "t", base_config(output={"kind": "label", "labels": [f"l{i}" for i in range(labels)]},
                                                     split={"eval_fraction": 0.1}))
    (folder / "inputs.jsonl").write_text("".join(f'{{"text": "message {i}"}}\n' for i in range(rows)))
    rc, lines = run_validate(folder, capsys)
    found = [w for w in warnings(lines) if "training rows a label" in w]
    assert bool(found) == warned and rc == 0
    if warned:
        need = -(-MIN_ROWS_PER_LABEL * labels * 10 // 9)
        assert f"({rows} inputs, {labels} labels" in found[0] and f"at least {need} inputs" in found[0]


@pytest.mark.parametrize(("rows", "limit", "margin"), [(48, None, 14), (500, 100, 10), (200, None, None), (500, None, None)])
def test_too_few_eval_inputs_is_a_warning_with_the_margin_they_give(tmp_path, capsys, rows, limit, margin):
    """48 real eval inputs (a split by user of a week of logs) made the report's agreement a +-14-point
    figure and the teacher's margin "within chance"; validate says so, and how many to give."""
    ev = {"source": {"path": "eval.jsonl"}, **({"limit": limit} if limit else {})}
    cfg = base_config(eval=ev, train={"method": "sft"})
    folder = write_task(tmp_path / "t", cfg, {"eval.jsonl": "".join(f'{{"text": "r {i}"}}\n' for i in range(rows))})
    rc, lines = run_validate(folder, capsys)
    found = [w for w in warnings(lines) if "inputs to evaluate on" in w]
    assert rc == 0 and bool(found) == (margin is not None)
    if margin:
        assert f"{min(rows, limit or rows)} inputs to evaluate on" in found[0] and f"+-{margin} points" in found[0]
        assert "at least 200 inputs" in found[0]


def test_the_demo_copied_onto_whole_reviews_trains_on_every_row(tmp_path, capsys):
    """README's recipe on a polarity set of whole reviews (IMDb-length: some pass 1,024 tokens): the
    copied demo must not carry a max_length that drops them (it had 256: an error, as had TRL's 1,024
    for a tenth of the rows), so no setting has to be touched."""
    import json
    import shutil

    import yaml

    from pipeline import yaml_io
    from tests.conftest import REPO

    folder = tmp_path / "reviews"
    shutil.copytree(REPO / "prompts" / "sentiment", folder)
    reviews = [" ".join(["word"] * (1500 if i % 10 == 0 else 300)) + f" {i}" for i in range(100)]
    (folder / "reviews.jsonl").write_text("".join(json.dumps({"review": r, "stars": i % 2}) + "\n"
                                                  for i, r in enumerate(reviews)))
    cfg = yaml_io.load((folder / "task.yaml").read_text())
    split = {"field": "review", "holdout_fraction": 0.3}
    cfg["inputs"] = {"source": {"path": "reviews.jsonl", "fields": {"text": "review"},
                                "group_split": {**split, "keep": "rest"}}}
    cfg["eval"]["source"] = {"path": "reviews.jsonl", "fields": {"text": "review", "gold": "stars"},
                             "group_split": {**split, "keep": "holdout"}}
    cfg["eval"]["gold_map"] = {1: "positive", 0: "negative"}
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not errors(lines), lines
    assert not [ln for ln in lines if "max_length" in ln], lines


def test_class_names_that_begin_the_labels_get_the_gold_map_that_fixes_them(tmp_path, capsys):
    """IMDb's Parquet stores its gold as a ClassLabel named `neg`/`pos`; asked for [positive, negative],
    validate names the class of the id it shows and the exact gold_map, and that gold_map (by class
    name, as the error writes it) is what read_eval_source then applies; before, a gold_map by class
    name was never consulted for a ClassLabel id."""
    from datasets import ClassLabel, Dataset, Features, Value

    from pipeline.config.task import load_task
    from pipeline.evaluation.eval_inputs import read_eval_source

    folder = tmp_path / "t"
    folder.mkdir()
    feats = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    rows = [{"text": f"review {i}", "label": i % 2} for i in range(6)]
    Dataset.from_list(rows, features=feats).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    ev = {"source": {"path": "test-*.parquet"}, "gold_field": "label"}
    cfg = base_config(output={"kind": "label", "labels": ["positive", "negative"]}, eval=ev, train={"method": "sft"})
    rc, lines = run_validate(write_task(folder, cfg), capsys)
    (err,) = errors(lines)
    assert rc != 0 and "6 of 6 gold values" in err and "(e.g. 0, the class 'neg', in row 1)" in err
    assert "map them with eval.gold_map: {neg: negative, pos: positive}," in err
    cfg["eval"]["gold_map"] = {"neg": "negative", "pos": "positive"}
    rc, lines = run_validate(write_task(folder, cfg), capsys)
    assert rc == 0 and not errors(lines), lines
    _, golds, _ = read_eval_source(load_task(folder), None)
    assert golds == ["negative", "positive"] * 3


def test_an_unlabelled_hub_split_is_named_as_such_with_the_where_that_keeps_the_labelled_rows(tmp_path, capsys):
    """GLUE's test splits (and IMDb's unsupervised one) hold the ClassLabel -1, "no label". Pointed at
    one, validate says so and offers the `where` that keeps the labelled rows, not a gold_map no value
    could satisfy; evaluate's reader says the same."""
    from datasets import ClassLabel, Dataset, Features, Value

    from pipeline.config.task import load_task
    from pipeline.errors import InputDataError
    from pipeline.evaluation.eval_inputs import read_eval_source

    folder = tmp_path / "t"
    folder.mkdir()
    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    rows = [{"sentence": f"a film {i}", "label": [-1, 0, 1][i % 3]} for i in range(6)]
    Dataset.from_list(rows, features=feats).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    ev = {"source": {"path": "test-*.parquet", "fields": {"text": "sentence", "label": "label"}}, "gold_field": "label"}
    cfg = base_config(output={"kind": "label", "labels": ["negative", "positive"]}, eval=ev, train={"method": "sft"})
    rc, lines = run_validate(write_task(folder, cfg), capsys)
    (err,) = errors(lines)
    assert rc != 0 and "2 of 6 gold values are -1, a ClassLabel's 'no label'" in err
    assert "eval.source.where: {label: [negative, positive]}" in err and "gold_map" not in err
    with pytest.raises(InputDataError, match=r"input 1: gold value -1 is a ClassLabel's 'no label'"):
        read_eval_source(load_task(folder), None)

    cfg["eval"]["source"]["where"] = {"label": ["negative", "positive"]}
    rc, lines = run_validate(write_task(folder, cfg), capsys)
    assert rc == 0 and not errors(lines), lines
    _, golds, _ = read_eval_source(load_task(folder), None)
    assert golds == ["negative", "positive"] * 2


def test_a_classlabel_with_none_of_the_labels_gets_its_names_as_the_labels_to_list(tmp_path, capsys):
    """A copy of the demo pointed at an intents set still lists [positive, negative]: validate names
    the ClassLabel's own names as the output.labels to write."""
    from datasets import ClassLabel, Dataset, Features, Value

    folder = tmp_path / "t"
    folder.mkdir()
    names = ["book_flight", "book_hotel", "change_pin"]
    feats = Features({"text": Value("string"), "intent": ClassLabel(names=names)})
    Dataset.from_list([{"text": f"message {i}", "intent": i % 3} for i in range(6)],
                      features=feats).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    ev = {"source": {"path": "test-*.parquet"}, "gold_field": "intent"}
    cfg = base_config(output={"kind": "label", "labels": ["positive", "negative"]}, eval=ev, train={"method": "sft"})
    rc, lines = run_validate(write_task(folder, cfg), capsys)
    (err,) = errors(lines)
    assert rc != 0 and "(e.g. 0, the class 'book_flight', in row 1)" in err
    assert "list the ClassLabel's names as output.labels: [book_flight, book_hotel, change_pin]" in err
