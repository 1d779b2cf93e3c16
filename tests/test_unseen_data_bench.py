"""bench/unseen_data.py builds each labelled set into a task the way the README tells a new user to:
prompts/sentiment copied, both sources pointed at the set's file and split by row, the question
reworded, every other setting the demo's."""
from __future__ import annotations

import yaml

import bench.unseen_data as unseen
from pipeline.config.task import load_task
from pipeline.curation.decontam import words
from pipeline.inputs import read_source
from pipeline.prompts import PromptRenderer


def test_a_set_becomes_the_demo_task_split_by_row_with_its_own_question(tmp_path, monkeypatch):
    monkeypatch.setattr(unseen, "VADER", tmp_path / "vader")
    (tmp_path / "vader").mkdir()
    lines = [f"{2 * i}\t{1.5 if i % 3 else -2.25}\tSo much fun at place {i}!!\n"
             f"{2 * i + 1}\t{1.5 if i % 3 else -2.25}\tso much FUN at place {i}.\n" for i in range(80)]
    (tmp_path / "vader" / "tweets_GroundTruth.txt").write_text("".join(lines) + "999\t0.0\tneither\n")

    rows = unseen.gold_rows("tweets")
    assert len(rows) == 160 and ("neither", "positive") not in rows and ("neither", "negative") not in rows
    assert rows[0] == ("So much fun at place 0!!", "negative") and rows[2][1] == "positive"

    folder = unseen.build_task("tweets", tmp_path / "out")
    task = load_task(folder)
    demo = yaml.safe_load((unseen.REPO / "prompts" / "sentiment" / "task.yaml").read_text())
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    for section in ("teacher", "output", "student", "train", "split", "dedupe"):
        assert cfg[section] == demo[section], section  # the demo's settings, untouched
    assert task.config.eval.limit == demo["eval"]["limit"] and task.config.eval.source.group_split.field == "text"

    transfer = read_source(task.config.inputs.source, task.path)
    held = read_source(task.config.eval.source, task.path, "eval.source")
    assert transfer and held and len(transfer) + len(held) == 160
    key = lambda r: " ".join(words(r["text"]))
    assert not {key(r) for r in transfer} & {key(r) for r in held}  # a post's variants stay on one side
    assert {r["gold"] for r in held} == {"positive", "negative"}

    user = PromptRenderer.for_task(task).render(transfer[0])[-1].content
    assert user.startswith("Tweet: ") and user.endswith("Is this tweet positive or negative?")


def test_the_three_label_tweets_call_a_rating_near_zero_neutral_and_offer_three_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(unseen, "VADER", tmp_path / "vader")
    (tmp_path / "vader").mkdir()
    (tmp_path / "vader" / "tweets_GroundTruth.txt").write_text(
        "1\t0.0\tmeh\n2\t0.45\tfine I guess\n3\t-0.5\tnot great\n4\t0.6\tnice one\n5\t-1.2\tawful day\n")
    assert unseen.gold_rows("tweets3") == [("meh", "neutral"), ("fine I guess", "neutral"), ("not great", "neutral"),
                                           ("nice one", "positive"), ("awful day", "negative")]
    assert [label for _, label in unseen.gold_rows("tweets")] == ["positive", "negative", "positive", "negative"]
    task = load_task(unseen.build_task("tweets3", tmp_path / "out"))
    assert task.config.output.labels == ["negative", "neutral", "positive"]
    user = PromptRenderer.for_task(task).render({"text": "meh"})[-1].content
    assert user.endswith("Is this tweet negative, neutral or positive?")
