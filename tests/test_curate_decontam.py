"""Decontamination by word n-gram overlap with the eval inputs and extra files."""
from __future__ import annotations

import pytest

from pipeline.curation.decontam import EvalIndex, read_extra_file
from pipeline.errors import InputDataError

EVAL = ("One of the most quietly devastating films of the decade, anchored by a performance of rare "
        "restraint and grace.")


def test_a_shared_13_word_run_is_found_whatever_the_case_and_punctuation():
    index = EvalIndex(n=13)
    index.add(EVAL, "eval.source")
    leaked = "I think it is ONE of the most quietly-devastating films of the decade; anchored by a performance!"
    source, words = index.match(leaked)
    assert source == "eval.source" and len(words.split()) == 13


def test_twelve_shared_words_are_not_contamination():
    index = EvalIndex(n=13)
    index.add(EVAL, "eval.source")
    assert index.match("one of the most quietly devastating films of the decade anchored by nothing") is None


def test_an_eval_text_shorter_than_n_matches_only_a_text_equal_to_it():
    index = EvalIndex(n=13)
    index.add("A total mess.", "benchmark.txt")
    assert index.match("a total mess") == ("benchmark.txt", "a total mess")
    assert index.match("a total mess of a movie, sadly") is None


def test_extra_files_csv_jsonl_and_text(tmp_path):
    (tmp_path / "b.csv").write_text("review,score\n\"great fun\",5\n")
    (tmp_path / "b.jsonl").write_text('{"review": "dull", "n": 1}\n')
    (tmp_path / "b.txt").write_text("line one\n\nline two\n")
    assert read_extra_file(tmp_path / "b.csv", "review") == ["great fun"]
    assert read_extra_file(tmp_path / "b.csv", None) == ["great fun", "5"]
    assert read_extra_file(tmp_path / "b.jsonl", None) == ["dull"]
    assert read_extra_file(tmp_path / "b.txt", None) == ["line one", "line two"]
    with pytest.raises(InputDataError, match="decontam.field"):
        read_extra_file(tmp_path / "b.jsonl", "text")
    with pytest.raises(InputDataError, match="not found"):
        read_extra_file(tmp_path / "missing.jsonl", None)
    (tmp_path / "bad.jsonl").write_text('{"review": "ok"}\n{"review": \n')
    with pytest.raises(InputDataError, match=r"bad.jsonl:2: malformed JSON"):
        read_extra_file(tmp_path / "bad.jsonl", None)
