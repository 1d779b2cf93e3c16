"""bench/long_reviews.py's data and task: whole reviews served as the Hub serves IMDb, and the README's
recipe on them with the defaults (nothing dropped for length, the gold_map validate offers)."""
from __future__ import annotations

import pytest

from bench.long_reviews import CORPUS, build_task, is_test_movie, reviews, write_hub_files
from pipeline.config.task import load_task
from pipeline.evaluation.eval_inputs import read_eval_source
from pipeline.inputs import class_label_names, read_source
from pipeline.stages.validate import validate_task

pytestmark = pytest.mark.skipif(not CORPUS.exists(), reason="the corpus comes with `make setup`")


def test_a_review_is_several_snippets_of_one_movie_and_one_verdict():
    import pandas as pd

    rows = reviews()
    assert rows == reviews() and len(rows) > 600
    df = pd.read_csv(CORPUS)
    for r in rows[:50]:
        own = df[(df.movie_name == r["movie"]) & (df.category == ("fresh" if r["label"] else "rotten"))].text
        assert any(r["text"].startswith(t) for t in own)  # it opens with a snippet of its movie and verdict
        assert sum(t in r["text"] for t in own) >= 3
    words = [len(r["text"].split()) for r in rows]
    assert sum(words) / len(words) > 100  # whole reviews, not the demo's one-sentence snippets


def test_the_task_trains_on_every_review_and_evaluates_on_other_movies(tmp_path):
    sizes = write_hub_files(tmp_path / "hub", reviews())
    assert sizes["test"] > 200 and sizes["unsupervised"] > 300
    task = load_task(build_task(tmp_path))
    inputs = read_source(task.config.inputs.source, task.path)
    eval_rows, golds, _ = read_eval_source(task, None)
    assert len(inputs) == sizes["unsupervised"] and len(eval_rows) == sizes["test"]
    assert not {r["text"] for r in inputs} & {r["text"] for r in eval_rows}
    movie = {r["text"]: r["movie"] for r in reviews()}  # split by movie: no movie on both sides
    assert all(is_test_movie(movie[r["text"]]) for r in eval_rows)
    assert not any(is_test_movie(movie[r["text"]]) for r in inputs)
    assert class_label_names(task.config.eval.source, task.path, "gold") == ["neg", "pos"]
    assert set(golds) == {"negative", "positive"}  # the class names through the gold_map
    report = validate_task(str(task.path))
    assert not report.problems, report.problems
    assert not [w for w in report.warnings if "max_length" in w], report.warnings
