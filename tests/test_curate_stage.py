"""The curate stage end to end, on generated.jsonl files written by the tests."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main as cli_main
from pipeline.config.task import load_task
from pipeline.errors import ConfigError, InputDataError
from pipeline.records import TrainRow, read_jsonl
from pipeline.stages.curate import run_curate
from tests.curate_fixtures import (
    edit_task_yaml,
    make_record,
    negative_first_token,
    position,
    positive_first_token,
    write_generated,
)

REPO = Path(__file__).resolve().parent.parent
EVAL_REVIEW = ("an unforgettable journey through grief and hope that reminds us why we go to the movies "
               "in the first place and why we keep going back")
REVIEWS = [
    ("a warm and funny comedy with a great cast", "positive"),
    ("the plot drags and the ending is a mess", "negative"),
    ("gorgeous animation and a moving score", "Positive"),
    ("dull, loud and far too long", "negative"),
    ("the best thriller I have seen this year", "positive"),
    ("a tedious documentary with nothing to say", "Negative."),
    ("charming leads and a clever script", "positive"),
    ("wooden acting and a predictable twist", "negative"),
    ("a tender romance that earns its tears", "positive"),
    ("the jokes never land and the pacing is off", "negative"),
]


def sentiment_records():
    records = []
    for i, (text, answer) in enumerate(REVIEWS):
        lp = positive_first_token() if answer.lower().startswith("positive") else negative_first_token()
        records.append(make_record(text, answer, logprobs=lp if i % 3 else None))  # every third: no logprobs
    records += [
        make_record(REVIEWS[0][0].upper() + "  ", "positive", logprobs=positive_first_token(-0.01), salt="dup"),
        make_record("what a film", "I'm sorry, I can't help with that.", salt="refusal"),
        make_record("so so", "neutral", salt="unknown label"),
        make_record("Critics agree: " + EVAL_REVIEW + ", truly.", "positive", salt="leak"),
        make_record("cut off", "The sentiment", finish_reason="length", salt="cut"),
    ]
    return records


@pytest.fixture
def sentiment(task_copy, data_root):
    folder = task_copy("sentiment")
    (folder / "eval.csv").write_text(f'text,category\n"{EVAL_REVIEW}",fresh\n"dreadful",rotten\n', encoding="utf-8")
    edit_task_yaml(
        folder,
        filters={"drop_truncated": True},
        # these records come without the content-free answers generate asks for the shipped task
        output={"kind": "label", "labels": ["positive", "negative"], "calibrate": "prior"},
        eval={"source": {"path": "eval.csv", "fields": {"text": "text", "gold": "category"}}, "gold_field": "gold",
              "gold_map": {"fresh": "positive", "rotten": "negative"}},
        split={"eval_fraction": 0.2},
    )
    return load_task(folder)


def test_stage_writes_a_version_with_every_drop_explained(sentiment, data_root):
    write_generated(data_root / "data", "sentiment", sentiment_records())
    manifest = run_curate(sentiment, quiet=True)
    root = data_root / "data" / "sentiment"
    version = (root / "latest").read_text().strip()
    folder = root / "versions" / version
    assert version == manifest["version"] and (folder / "dataset" / "dataset_dict.json").exists()

    counts = manifest["counts"]
    assert counts["rejected"] == {"contaminated": 1, "exact_duplicate": 1, "label_unknown": 1, "refusal": 1,
                                  "truncated": 1}
    assert counts["kept"] == 10 and counts["train"] + counts["eval"] == 10 and counts["eval"] == 2
    assert manifest["label_distribution"]["eval"] == {"negative": 1, "positive": 1}  # stratified
    rejected = [json.loads(line) for line in (folder / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == sorted(counts["rejected"])
    assert all(r["detail"] and r["record"]["id"] for r in rejected)
    dup = next(r for r in rejected if r["reason"] == "exact_duplicate")
    assert dup["record"]["completion"] == REVIEWS[0][1]  # the copy with higher label probability was kept

    rows = list(read_jsonl(folder / "train.jsonl", TrainRow)) + list(read_jsonl(folder / "eval.jsonl", TrainRow))
    assert {r.completion[0].content for r in rows} == {"positive", "negative"}  # canonical labels
    assert rows[0].prompt[-1].role == "user" and rows[0].completion[0].role == "assistant"
    kinds = {r.soft_label_kind for r in rows}
    assert kinds == {"logprobs", "one_hot"}
    assert manifest["soft_label_sources"] == {"logprobs": 7, "no_logprobs": 3}  # the kept duplicate has logprobs
    for r in rows:
        assert sum(r.soft_label.values()) == pytest.approx(1.0)
        if r.soft_label_kind == "one_hot":
            assert r.soft_label[r.label] == 1.0 and r.token_logprobs is None
        else:
            assert r.soft_label[r.label] > 0.9 and r.token_logprobs

    card = (folder / "README.md").read_text()
    for needle in ("gpt-4o-mini", "user.j2", "exact_duplicate", "| positive |", "13-word", "eval.source (2 texts)",
                   "cost $0.0001"):
        assert needle in card
    for key in ("stage", "task", "created_at", "config", "inputs", "params", "counts", "timings"):
        assert key in manifest
    assert any(p.endswith("generated.jsonl") for p in manifest["inputs"])

    from datasets import load_from_disk

    dd = load_from_disk(str(folder / "dataset"))
    assert dd["train"].num_rows == counts["train"] and "soft_label" in dd["train"].column_names


def test_same_input_gives_byte_identical_files(sentiment, data_root):
    write_generated(data_root / "data", "sentiment", sentiment_records())
    first = run_curate(sentiment, quiet=True)["version"]
    second = run_curate(sentiment, quiet=True)["version"]
    assert first != second
    versions = data_root / "data" / "sentiment" / "versions"
    for name in ("train.jsonl", "eval.jsonl", "rejected.jsonl"):
        assert (versions / first / name).read_bytes() == (versions / second / name).read_bytes()


def test_corrupt_line_stops_with_strict_and_is_reported_otherwise(sentiment, data_root, capsys):
    path = write_generated(data_root / "data", "sentiment", sentiment_records()[:4],
                           extra_lines={3: '{"id": "abc", "task": ', 5: '{"id": "x"}'})
    with pytest.raises(InputDataError, match=r"generated.jsonl:3: malformed JSON.*--no-strict"):
        run_curate(sentiment, quiet=True, strict=True)
    assert not (data_root / "data" / "sentiment" / "latest").exists()

    manifest = run_curate(sentiment, strict=False)
    err = capsys.readouterr().err
    assert f"{path}:3: malformed JSON" in err and f"{path}:5: field" in err
    assert manifest["counts"]["corrupt_lines"] == 2 and manifest["counts"]["kept"] == 4
    folder = data_root / "data" / "sentiment" / "versions" / manifest["version"]
    corrupt = [json.loads(x) for x in (folder / "rejected.jsonl").read_text().splitlines()]
    assert [(c["line"], c["raw"]) for c in corrupt if c["reason"] == "corrupt_line"] == [
        (3, '{"id": "abc", "task": '), (5, '{"id": "x"}')]


def test_cli_strict_flag_exits_nonzero_with_one_line(sentiment, data_root):
    write_generated(data_root / "data", "sentiment", sentiment_records()[:2], extra_lines={2: "not json"})
    proc = subprocess.run(
        [sys.executable, "scripts/02_curate.py", str(sentiment.path), "--strict"], cwd=REPO, check=False,
        capture_output=True, text=True, env={**__import__("os").environ},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "generated.jsonl:2: malformed JSON" in proc.stderr
    assert cli_main(["curate", str(sentiment.path), "--no-strict", "-q"]) == 0


def test_every_record_rejected_is_an_error_and_latest_is_not_moved(sentiment, data_root):
    write_generated(data_root / "data", "sentiment", [make_record("a", "maybe"), make_record("b", "unsure", salt="2")])
    with pytest.raises(InputDataError, match="all 2 records were rejected"):
        run_curate(sentiment, quiet=True)
    assert not (data_root / "data" / "sentiment" / "latest").exists()


def test_decontaminates_against_extra_files_by_ngram(sentiment, data_root, tmp_path):
    extra = tmp_path / "benchmark.jsonl"
    extra.write_text(json.dumps({"review": "the best thriller I have seen this year", "id": 1}) + "\n")
    edit_task_yaml(sentiment.path, decontam={"ngram": 5, "extra_files": [str(extra)], "field": "review"})
    task = load_task(sentiment.path)
    write_generated(data_root / "data", "sentiment", sentiment_records()[:10])
    manifest = run_curate(task, quiet=True)
    assert manifest["counts"]["rejected"] == {"contaminated": 1}
    assert manifest["decontam"]["sources"] == {"eval.source": 2, str(extra): 1}


def test_missing_eval_source_names_the_fix(sentiment, data_root):
    (sentiment.path / "eval.csv").unlink()
    write_generated(data_root / "data", "sentiment", sentiment_records()[:3])
    with pytest.raises(InputDataError, match="decontam.enabled: false"):
        run_curate(sentiment, quiet=True)


def test_json_task_repairs_fences_validates_and_trims_token_logprobs(task_copy, data_root):
    folder = task_copy("ticket_extraction")
    task = load_task(folder)
    schema = json.loads((folder / "schema.json").read_text())
    good = {"product": "kettle", "category": schema["properties"]["category"]["enum"][0], "priority": "high",
            "order_id": "A-1"}
    body = json.dumps(good)
    fenced = "```json\n" + body + "\n```"
    tokens = [position("```json\n", -0.1, []), position(body, -0.2, []), position("\n```", -0.1, [])]
    records = [
        make_record("ticket one", fenced, task="ticket_extraction", logprobs=tokens),
        make_record("ticket two", "not json at all", task="ticket_extraction"),
        make_record("ticket three", json.dumps({"unexpected": 1}), task="ticket_extraction"),
    ]
    write_generated(data_root / "data", "ticket_extraction", records)
    manifest = run_curate(task, quiet=True)
    assert manifest["counts"]["rejected"] == {"json_invalid": 1, "json_schema": 1}
    assert manifest["json_repairs"] == {"code_fence": 1}
    folder = data_root / "data" / "ticket_extraction" / "versions" / manifest["version"]
    rows = list(read_jsonl(folder / "train.jsonl", TrainRow)) + list(read_jsonl(folder / "eval.jsonl", TrainRow))
    assert rows[0].completion[0].content == body
    assert [p.token for p in rows[0].token_logprobs] == [body]


def test_teacher_written_inputs_are_deduped_on_the_written_text_only(sentiment, data_root):
    a = make_record("a warm and funny comedy", "positive", salt="a")
    b = make_record("a cold and dreary horror film", "negative", salt="b")
    c = make_record("A warm and funny  comedy", "positive", salt="c")
    a.inputs.update(genre="comedy", aspect="acting")
    b.inputs.update(genre="comedy", aspect="acting")  # same seeds, different text: kept
    c.inputs.update(genre="drama", aspect="plot")  # other seeds, same text: a duplicate
    write_generated(data_root / "data", "sentiment", [a, b, c])
    edit_task_yaml(sentiment.path, inputs={"generate": {"field": "text", "seeds": {"genre": ["comedy", "drama"]},
                                                        "grid": {"aspect": ["acting", "plot"]}, "count": 3}})
    sentiment = load_task(sentiment.path)
    assert run_curate(sentiment, quiet=True)["counts"]["rejected"] == {"exact_duplicate": 1}

    edit_task_yaml(sentiment.path, dedupe={"fields": ["review"]})
    with pytest.raises(ConfigError, match="dedupe.fields"):
        run_curate(load_task(sentiment.path), quiet=True)


def test_a_second_build_of_the_same_task_at_once_is_refused_and_leftovers_are_cleaned(sentiment, data_root):
    from pipeline.errors import LockedError
    from pipeline.orchestration.lock import TaskLock

    write_generated(data_root / "data", "sentiment", sentiment_records()[:4])
    root = data_root / "data" / "sentiment"
    with TaskLock(root / "curate.lock"), pytest.raises(LockedError, match="curate.lock"):
        run_curate(sentiment, quiet=True)
    leftover = root / "versions" / ".tmp-20200101T000000Z"
    leftover.mkdir(parents=True)
    run_curate(sentiment, quiet=True)
    assert not leftover.exists()


def test_a_line_that_is_not_utf8_is_named_by_line_number(sentiment, data_root):
    path = write_generated(data_root / "data", "sentiment", sentiment_records()[:3])
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + lines[1] + b'{"id": "\xff\xfe"}\n' + lines[2])
    with pytest.raises(InputDataError, match=r"generated.jsonl:3: not UTF-8"):
        run_curate(sentiment, quiet=True)


def test_no_eval_fraction_gives_an_empty_eval_split_with_the_same_columns(sentiment, data_root):
    edit_task_yaml(sentiment.path, split={"eval_fraction": 0.0})
    write_generated(data_root / "data", "sentiment", sentiment_records()[:6])
    manifest = run_curate(load_task(sentiment.path), quiet=True)
    assert manifest["counts"]["eval"] == 0 and manifest["counts"]["train"] == 6
    from datasets import load_from_disk

    dd = load_from_disk(str(data_root / "data" / "sentiment" / "versions" / manifest["version"] / "dataset"))
    assert dd["eval"].num_rows == 0 and dd["eval"].column_names == dd["train"].column_names


def test_dedupe_compares_a_mixed_in_real_input_by_its_own_fields():
    """With inputs.generate, dedupe compares only the written field (seed attributes repeat by design);
    a real input mixed in without that field is compared by its own fields, not as an empty text that
    every other such input would duplicate."""
    from pipeline.stages.curate import compare_text

    written = make_record("a written review", "positive")
    written.inputs = {"text": "a written review", "genre": "comedy"}
    real = make_record("a real review", "negative", salt="r")
    real.inputs = {"review": "a real review", "source": "app"}
    assert compare_text(written, "input", ["text"]) == "a written review"
    assert compare_text(real, "input", ["text"]) == "a real review\napp"


def test_real_inputs_one_word_apart_are_both_kept_and_teacher_written_ones_are_not(sentiment, data_root):
    """Near-dedupe's defaults are tuned to a teacher's rewrites. The task's own inputs (inputs.source
    alone) are the distribution the student will serve, already answered: by default only their exact
    copies go. Written inputs, or `dedupe.near: true`, still lose their near duplicates."""
    texts = ["someone took my wallet with the debit card in Rome last night",
             "someone took my wallet with the debit card in Lisbon last night"]  # 10 words, J = 0.64
    records = [make_record(t, "negative", logprobs=negative_first_token(), salt=str(i)) for i, t in enumerate(texts)]
    write_generated(data_root / "data", "sentiment", records)
    manifest = run_curate(sentiment, quiet=True)
    assert manifest["counts"]["rejected"] == {} and manifest["counts"]["kept"] == 2
    assert manifest["dedupe"]["near"] is False
    card = (data_root / "data" / "sentiment" / "versions" / manifest["version"] / "README.md").read_text()
    assert "set dedupe.near: true" in card

    edit_task_yaml(sentiment.path, dedupe={"compare": "input", "near": True})
    manifest = run_curate(load_task(sentiment.path), quiet=True)
    assert manifest["counts"]["rejected"] == {"near_duplicate": 1}
    from pipeline.orchestration.drift import summarize_version  # the drift report reads curate's own counts

    assert summarize_version(data_root / "data" / "sentiment" / "versions" / manifest["version"])["duplicate_rate"] == 0.5

    edit_task_yaml(sentiment.path, dedupe={"compare": "input"},
                   inputs={"generate": {"field": "text", "seeds": {"genre": ["crime"]}, "count": 2}})
    manifest = run_curate(load_task(sentiment.path), quiet=True)
    assert manifest["counts"]["rejected"] == {"near_duplicate": 1} and manifest["dedupe"]["near"] is True


def test_kept_near_duplicates_of_real_inputs_stay_on_one_side_of_the_split(sentiment, data_root):
    """Kept near duplicates must not leak into the eval split that early stopping reads: each sorts
    at its representative's place. The same records split by their own ids alone part some pairs."""
    import random

    from pipeline.curation import build

    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    texts = []
    for pair in range(30):
        base = rng.sample(words, 10)
        texts += [" ".join(base), " ".join(base[:-1] + [f"other{pair}"])]  # one word apart
    records = [make_record(t, "negative", logprobs=negative_first_token(), salt=str(i)) for i, t in enumerate(texts)]
    write_generated(data_root / "data", "sentiment", records)
    edit_task_yaml(sentiment.path, dedupe={"compare": "input"}, split={"eval_fraction": 0.5})
    manifest = run_curate(load_task(sentiment.path), quiet=True)
    assert manifest["counts"]["kept"] == 60 and manifest["counts"]["split_with_their_near_duplicate"] == 30
    version = data_root / "data" / "sentiment" / "versions" / manifest["version"]
    side = {row.prompt[-1].content: split for split in ("train", "eval")
            for row in read_jsonl(version / f"{split}.jsonl", TrainRow)}
    pairs = [[side[next(c for c in side if t in c)] for t in texts[i:i + 2]] for i in range(0, 60, 2)]
    assert all(a == b for a, b in pairs)
    assert 10 <= manifest["counts"]["eval"] <= 50
    assert "on the same side of the train/eval split" in (version / "README.md").read_text()
    from pipeline.orchestration.drift import summarize_version

    assert summarize_version(version)["duplicate_rate"] == 0.0  # grouped, not dropped
    by_own_id = build.assign_split([r.id for r in records], ["negative"] * 60, 0.5, "distill")
    assert any(by_own_id[i] != by_own_id[i + 1] for i in range(0, 60, 2))  # what the groups prevent
