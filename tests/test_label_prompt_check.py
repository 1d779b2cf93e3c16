"""A label task whose prompt never offers some of its labels is warned about before anything is paid
for: by `distill validate`, and by `distill generate` before its first request."""
from __future__ import annotations

import yaml

from pipeline.prompts import PromptRenderer, unnamed_labels
from pipeline.records import Message
from tests.test_validate import base_config, run_validate, write_task


def _user(text: str) -> list[Message]:
    return [Message(role="system", content="You label reviews."), Message(role="user", content=text)]


def test_a_label_the_question_does_not_offer_is_named():
    labels = ["positive", "neutral", "negative"]
    msgs = _user("Review: fine\nIs this review positive or negative?")
    assert unnamed_labels(msgs, labels) == ["neutral"]


def test_a_label_named_only_by_the_input_itself_still_counts_as_unnamed(tmp_path, capsys):
    cfg = base_config(output={"kind": "label", "labels": ["positive", "neutral", "negative"]})
    folder = write_task(tmp_path / "t", cfg, {"user.j2": "Review: {{ text }}\nIs this review positive or negative?",
                                              "inputs.jsonl": '{"text": "a neutral take"}\n'})
    _, lines = run_validate(folder, capsys)
    assert [ln for ln in lines if "never names" in ln and "'neutral'" in ln]


def test_a_short_field_value_does_not_hide_a_named_label(tmp_path, capsys):
    """Input fields are masked in the rendering, not cut out of the text: a field worth "a" must not
    turn 'card_arrival' into something the check cannot find."""
    cfg = base_config(output={"kind": "label", "labels": ["card_arrival", "top_up_failed"]})
    folder = write_task(tmp_path / "t", cfg, {
        "user.j2": "Tag: {{ tag }}\nText: {{ text }}\nAnswer card_arrival or top_up_failed.",
        "inputs.jsonl": '{"text": "where is my card", "tag": "a"}\n'})
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "never names" in ln]


def test_case_and_underscores_read_as_spaces_count_as_named():
    msgs = _user("Which intent: Book Flight, book-hotel or CANCEL_BOOKING?")
    assert unnamed_labels(msgs, ["book_flight", "book_hotel", "cancel_booking"]) == []


def test_validate_warns_with_the_template_file_and_the_fix(tmp_path, capsys):
    cfg = base_config(output={"kind": "label", "labels": ["positive", "neutral", "negative"]})
    folder = write_task(tmp_path / "t", cfg, {"user.j2": "Review: {{ text }}\nIs this review positive or negative?"})
    rc, lines = run_validate(folder, capsys)
    assert rc == 0  # a warning: the prompt may offer a label by a word the check cannot see
    warned = [ln for ln in lines if "never names" in ln]
    assert len(warned) == 1 and "'neutral'" in warned[0] and "user.j2" in warned[0]
    assert "{{ labels | join(', ') }}" in warned[0]


def test_validate_is_quiet_when_every_label_is_offered(tmp_path, capsys):
    cfg = base_config(output={"kind": "label", "labels": ["positive", "neutral", "negative"]})
    folder = write_task(tmp_path / "t", cfg, {"user.j2": "Review: {{ text }}\nAnswer {{ labels | join(', ') }}."})
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "never names" in ln]


def test_the_demo_question_follows_its_labels(task_copy):
    """prompts/sentiment's question is built from output.labels, so a copy with other labels offers them."""
    folder = task_copy("sentiment")
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    from pipeline.config.task import load_task

    two = PromptRenderer.for_task(load_task(folder)).render({"text": "Fine."})[-1].content
    assert two.endswith("Is this review positive or negative?")
    cfg["output"]["labels"] = ["positive", "neutral", "negative"]
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    three = PromptRenderer.for_task(load_task(folder)).render({"text": "Fine."})
    assert three[-1].content.endswith("Is this review positive, neutral or negative?")
    assert unnamed_labels(three, cfg["output"]["labels"]) == []


def test_generate_warns_before_asking_and_still_answers(task_copy, data_root, tiny_model_dir, capsys):
    from pipeline.config.task import load_task
    from pipeline.stages.generate import run_generate
    from tests.curate_fixtures import edit_task_yaml

    folder = task_copy("sentiment")
    (folder / "reviews.jsonl").write_text('{"text": "a warm film"}\n{"text": "a dull mess"}\n')
    (folder / "user.j2").write_text("Review: {{ text }}\nIs this review positive or negative?\n")
    edit_task_yaml(folder, teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2},
                   inputs={"source": {"path": "reviews.jsonl"}},
                   output={"kind": "label", "labels": ["positive", "neutral", "negative"], "calibrate": "none"})
    manifest = run_generate(load_task(folder))
    err = capsys.readouterr().err
    warned = [ln for ln in err.splitlines() if "never names" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: ") and "'neutral'" in warned[0]
    assert manifest["counts"]["records"] == 2  # a warning: the run goes on


def test_preview_shows_the_warning_with_the_prompts(tmp_path, capsys):
    from pipeline.cli import main

    cfg = base_config(output={"kind": "label", "labels": ["positive", "neutral", "negative"]})
    folder = write_task(tmp_path / "t", cfg, {"user.j2": "Review: {{ text }}\nIs this review positive or negative?"})
    assert main(["preview", str(folder), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "never names label(s) 'neutral'" in " ".join(out.split())


def test_many_labels_listed_after_the_input_are_warned_about_and_listed_before_it_are_not(tmp_path, capsys):
    """With tens of labels the list is most of each prompt: after the input every prompt pays for it,
    before it (system.j2) a batch shares it. A handful of labels after the input is left alone."""
    many = [f"{topic}_{outcome}" for topic in ("card", "top_up", "transfer", "pin", "refund")
            for outcome in ("arrival", "failed", "pending", "blocked")]  # 20 labels
    after = "Message: {{ text }}\nWhich is its intent: {{ labels | join(', ') }}?"
    folder = write_task(tmp_path / "a", base_config(output={"kind": "label", "labels": many}), {"user.j2": after})
    rc, lines = run_validate(folder, capsys)
    warned = [ln for ln in lines if "labels after the input" in ln]
    assert rc == 0 and len(warned) == 1 and "lists 20 labels" in warned[0] and "system.j2" in warned[0]

    folder = write_task(tmp_path / "b", base_config(output={"kind": "label", "labels": many}),
                        {"system.j2": "The intents: {{ labels | join(', ') }}.",
                         "user.j2": "Message: {{ text }}\nWhich of the intents is its intent?"})
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "labels after the input" in ln or "never names" in ln]

    few = many[:7]
    folder = write_task(tmp_path / "c", base_config(output={"kind": "label", "labels": few}), {"user.j2": after})
    rc, lines = run_validate(folder, capsys)
    assert rc == 0 and not [ln for ln in lines if "labels after the input" in ln]
