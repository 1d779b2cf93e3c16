"""output.label_codes: an API teacher answers a code letter, so one token's top-k is an exact
distribution over labels whose names share a prefix (book_flight, book_hotel)."""
from __future__ import annotations

import math

import pytest

from pipeline.config.task import load_task
from pipeline.prompts import PromptRenderer
from pipeline.records import TrainRow, read_jsonl
from pipeline.stages.curate import run_curate
from tests.curate_fixtures import edit_task_yaml, make_record, position, write_generated

LABELS = ["book_flight", "book_hotel", "cancel_booking"]


@pytest.fixture
def intents(task_copy):
    folder = task_copy("sentiment")
    (folder / "user.j2").write_text("Request: {{ text }}\nAnswer with the letter of its intent:\n{{ label_options }}\n")
    edit_task_yaml(folder, output={"kind": "label", "labels": LABELS, "label_codes": True},
                   decontam={"enabled": False}, dedupe={"enabled": False}, split={"eval_fraction": 0.0})
    return load_task(folder)


def test_the_prompt_lists_the_labels_as_codes(intents):
    user = PromptRenderer.for_task(intents).render({"text": "a room in Kyoto"})[-1].content
    assert "A) book_flight\nB) book_hotel\nC) cancel_booking" in user


def test_a_code_answer_gives_the_exact_distribution_and_the_label_name(intents, data_root):
    top = [("B", math.log(0.6)), ("A", math.log(0.3)), ("C", math.log(0.1))]
    records = [make_record("a room in Kyoto", "B", logprobs=[position("B", math.log(0.6), top)], salt="1"),
               make_record("two seats to Rome", "A)", salt="2")]  # no logprobs: one-hot on the code's label
    write_generated(data_root / "data", "sentiment", records)
    manifest = run_curate(intents, quiet=True)
    rows = {r.prompt[-1].content: r for r in read_jsonl(
        data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow)}
    hotel = rows["Review: a room in Kyoto"]
    assert hotel.label == "book_hotel" and hotel.completion[0].content == "book_hotel"
    assert hotel.soft_label == pytest.approx({"book_flight": 0.3, "book_hotel": 0.6, "cancel_booking": 0.1})
    flight = rows["Review: two seats to Rome"]
    assert flight.label == "book_flight" and flight.soft_label_kind == "one_hot"


def test_more_labels_than_letters_is_a_config_error(task_copy):
    from pipeline.errors import ConfigError

    folder = task_copy("sentiment")
    edit_task_yaml(folder, output={"kind": "label", "labels": [f"l{i}" for i in range(27)], "label_codes": True})
    with pytest.raises(ConfigError, match="label_codes: at most 26 labels"):
        load_task(folder)


def test_calibration_reads_the_code_answers(intents, data_root):
    """With output.calibrate, curate's weights come from the code letters' top-k, as the soft labels do:
    a teacher that leans to B has its lean divided out (not skipped because no answer names a label)."""
    edit_task_yaml(intents.path, output={"kind": "label", "labels": LABELS, "label_codes": True, "calibrate": "prior"})
    task = load_task(intents.path)
    lean = [("B", math.log(0.5)), ("A", math.log(0.3)), ("C", math.log(0.2))]
    records = [make_record(f"request {i}", "B", logprobs=[position("B", math.log(0.5), lean)], salt=str(i))
               for i in range(4)]
    write_generated(data_root / "data", "sentiment", records)
    manifest = run_curate(task, quiet=True)
    assert manifest["calibration"]["method"] == "prior"
    assert manifest["calibration"]["mean"] == pytest.approx({"book_flight": 0.3, "book_hotel": 0.5, "cancel_booking": 0.2})
    rows = list(read_jsonl(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "train.jsonl", TrainRow))
    # every answer equals the run's mean, so dividing by the mean leaves a uniform soft label
    assert rows[0].soft_label == pytest.approx({lab: 1 / 3 for lab in LABELS})
