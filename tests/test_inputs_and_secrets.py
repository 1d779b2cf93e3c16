"""Input sources (JSONL, CSV, HF on disk, filters) and key redaction."""
from __future__ import annotations

import pytest

from pipeline.config.inputs import SourceConfig
from pipeline.errors import InputDataError, TeacherError, redact
from pipeline.inputs import input_id, read_source


def test_csv_with_where_and_mapping(tmp_path):
    (tmp_path / "r.csv").write_text('category,text\nfresh,"good, really"\nplot,story\nrotten,bad\n')
    rows = read_source(
        SourceConfig(path="r.csv", fields={"text": "text", "gold": "category"}, where={"category": ["fresh", "rotten"]}),
        tmp_path,
    )
    assert rows == [{"text": "good, really", "gold": "fresh"}, {"text": "bad", "gold": "rotten"}]


def test_hf_dataset_on_disk(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"test": Dataset.from_dict({"body": ["a", "b"]})}).save_to_disk(str(tmp_path / "ds"))
    rows = read_source(SourceConfig(path="ds", fields={"text": "body"}, split="test"), tmp_path)
    assert rows == [{"text": "a"}, {"text": "b"}]
    with pytest.raises(InputDataError, match="set inputs.source.split"):
        read_source(SourceConfig(path="ds"), tmp_path)


def test_input_id_is_order_independent_and_content_sensitive():
    assert input_id({"a": 1, "b": "x"}) == input_id({"b": "x", "a": 1})
    assert input_id({"a": 1}) != input_id({"a": 2})


def test_keys_are_redacted_from_messages(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "not-shaped-like-a-key-123")
    err = TeacherError("401 for key not-shaped-like-a-key-123 and sk-" "proj-abcdefghijklmnop")
    assert "not-shaped" not in str(err) and "abcdefghijkl" not in str(err)
    assert redact("Authorization: Bearer abcdefghijklmnopq") == "Authorization: Bearer ***"


def test_non_utf8_jsonl_is_a_one_line_error_naming_the_line(tmp_path):
    from pipeline.records import read_jsonl

    path = tmp_path / "g.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(InputDataError, match=r"g\.jsonl:2: not UTF-8"):
        list(read_jsonl(path))


def test_group_split_keeps_every_group_on_one_side_and_sample_spreads_over_the_file(tmp_path):
    """The transfer set and the evaluation read one file from the two sides of a split by group
    (movie): no group on both sides, the same sides on every run; `sample` takes rows from all
    over the file, unlike `limit`, which takes its first rows."""
    from pipeline.config.inputs import SourceConfig
    from pipeline.inputs import read_source

    rows = [f"movie{m},snippet {m}-{i},{'fresh' if i % 2 else 'rotten'}" for m in range(40) for i in range(5)]
    (tmp_path / "rt.csv").write_text("movie_name,text,category\n" + "\n".join(rows) + "\n")

    def side(keep, **extra):
        src = SourceConfig(path="rt.csv", fields={"text": "text"},
                           group_split={"field": "movie_name", "holdout_fraction": 0.25, "keep": keep}, **extra)
        return read_source(src, tmp_path)

    rest, held = side("rest"), side("holdout")
    assert len(rest) + len(held) == 200 and 0 < len(held) < 100
    assert set(rest[0]) == {"text"}  # the group column is read for the split, then dropped
    movie = lambda r: r["text"].split()[1].split("-")[0]
    assert not {movie(r) for r in rest} & {movie(r) for r in held}
    assert side("rest") == rest  # a group's side is a hash of its name: stable across runs
    sampled = side("rest", sample=20)
    assert len(sampled) == 20 and len({movie(r) for r in sampled}) > 10
    assert len({movie(r) for r in side("rest", limit=20)}) <= 5


def test_a_sample_of_a_growing_file_keeps_the_inputs_it_had(tmp_path):
    """README: `sample: N` takes N inputs in a fixed hash order, so when the file grows, an input it
    took before stays unless a new one outranks it, and the answers already paid for are reused; a
    sample by position would swap most of them."""
    def sample(n_rows):
        (tmp_path / "posts.jsonl").write_text("".join(f'{{"text": "post {i}"}}\n' for i in range(n_rows)))
        return [r["text"] for r in read_source(SourceConfig(path="posts.jsonl", sample=50), tmp_path)]

    before, after = sample(200), sample(250)
    assert len(before) == len(after) == 50 and sample(250) == after
    old = {f"post {i}" for i in range(200)}
    assert {t for t in after if t in old} <= set(before)  # no input it had left out comes in
    assert len(set(before) & set(after)) >= 30  # most stay (40 expected of 50)


def test_a_split_by_row_keeps_variants_of_one_text_on_one_side(tmp_path):
    """Split by the text column itself (a file without a group column), the variants of one post that
    differ in case and punctuation ("I LOVE this!!" / "I love this.") fall on one side, as
    decontamination compares them; by their raw strings some pairs would land one on each side, one
    training the student and the other scoring it. A group column of its own is hashed as it is."""
    from pipeline.curation.decontam import words
    from pipeline.inputs import group_fraction

    pairs = [(f"I love topic {i}.", f"I LOVE topic {i}!!") for i in range(60)]
    (tmp_path / "posts.csv").write_text("text\n" + "".join(f"{a}\n{b}\n" for a, b in pairs))
    assert any((group_fraction(a) < 0.25) != (group_fraction(b) < 0.25) for a, b in pairs)  # raw hashing splits some

    def side(keep):
        src = SourceConfig(path="posts.csv", fields={"text": "text"},
                           group_split={"field": "text", "holdout_fraction": 0.25, "keep": keep})
        return {" ".join(words(r["text"])) for r in read_source(src, tmp_path)}

    rest, held = side("rest"), side("holdout")
    assert not rest & held and len(rest | held) == 60 and held
    (tmp_path / "users.csv").write_text("user,text\n" + "".join(f"U{i},post {i}\n" for i in range(40)))
    by_user = read_source(SourceConfig(path="users.csv", fields={"text": "text"},
                                       group_split={"field": "user", "holdout_fraction": 0.25, "keep": "holdout"}),
                          tmp_path)
    assert {r["text"] for r in by_user} == {f"post {i}" for i in range(40) if group_fraction(f"U{i}") < 0.25}


def test_where_and_group_split_may_name_a_variable_of_fields(tmp_path):
    """The README's "split by row with `field: text`" for a file whose text column is `sentence`,
    read as `text`: the variable names its column, and gives the same split as the column's name."""
    from pipeline.config.inputs import GroupSplitConfig

    (tmp_path / "r.csv").write_text("sentence,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(40)))

    def read(field: str, keep: str = "rest", **extra):
        split = GroupSplitConfig(field=field, holdout_fraction=0.3, keep=keep)
        return read_source(SourceConfig(path="r.csv", fields={"text": "sentence", "gold": "label"}, group_split=split,
                                        **extra), tmp_path)

    rest, held = read("text"), read("text", "holdout")
    assert rest == read("sentence") and held == read("sentence", "holdout")
    assert len(rest) + len(held) == 40 and not {r["text"] for r in rest} & {r["text"] for r in held}
    assert all(r["gold"] == "1" for r in read("text", where={"gold": ["1"]}))
    with pytest.raises(InputDataError) as err:
        read("movie")
    assert "r.csv:2: no column 'movie'" in str(err.value) and "sentence, label" in str(err.value)
    assert "variable of fields (text, gold)" in str(err.value) and "__where" not in str(err.value)


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """Excel saves "CSV UTF-8" with a byte-order mark; it was read into the first column's name."""
    (tmp_path / "x.csv").write_bytes("\ufefftext,label\nhello,1\n".encode("utf-8"))
    (tmp_path / "x.jsonl").write_bytes('\ufeff{"text": "hello"}\n'.encode("utf-8"))
    assert read_source(SourceConfig(path="x.csv", fields={"text": "text"}), tmp_path) == [{"text": "hello"}]
    assert read_source(SourceConfig(path="x.jsonl"), tmp_path) == [{"text": "hello"}]


def test_json_arrays_and_parquet_files_as_the_hub_serves_them(tmp_path):
    """A labelled set is often a .json array (pandas' orient="records") or JSON lines under a .json
    name (Dataset.to_json), or a Parquet file from the Hub; a Parquet file written by ``datasets``
    keeps its ClassLabel names in the schema metadata, which gold ids are read as."""
    import json

    from datasets import ClassLabel, Dataset, Features, Value

    from pipeline.inputs import class_label_names

    rows = [{"sentence": "good", "label": 1}, {"sentence": "bad", "label": 0}]
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=2))
    (tmp_path / "l.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    Dataset.from_list(rows, features=feats).to_parquet(str(tmp_path / "train-00000-of-00001.parquet"))
    for name in ("a.json", "l.json", "train-00000-of-00001.parquet"):
        source = SourceConfig(path=name, fields={"text": "sentence", "gold": "label"})
        assert read_source(source, tmp_path) == [{"text": "good", "gold": 1}, {"text": "bad", "gold": 0}], name
    assert class_label_names(SourceConfig(path="train-00000-of-00001.parquet", fields={"gold": "label"}),
                             tmp_path, "gold") == ["neg", "pos"]
    assert class_label_names(SourceConfig(path="a.json"), tmp_path, "label") is None
    for name in ("train-00000-of-00001.parquet",):  # `where` takes a ClassLabel's names as well as its ids
        for where in ({"label": ["pos"]}, {"gold": ["pos"]}, {"label": ["1"]}):
            source = SourceConfig(path=name, fields={"text": "sentence", "gold": "label"}, where=where)
            assert read_source(source, tmp_path) == [{"text": "good", "gold": 1}], where
    (tmp_path / "bad.json").write_text('[{"text": "a"},\n {"text": }]')
    with pytest.raises(InputDataError, match=r"bad.json:2: malformed JSON"):
        read_source(SourceConfig(path="bad.json"), tmp_path)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputDataError, match=r"bad.parquet: not a readable Parquet file"):
        read_source(SourceConfig(path="bad.parquet"), tmp_path)


def test_a_semicolon_or_tab_separated_csv_is_read_by_its_header(tmp_path):
    """Excel in comma-decimal locales saves "CSV" with semicolons; the header (no comma, a ';') says so.
    A comma in the header keeps the comma, so a comma-separated file with ';' in its text is unchanged."""
    (tmp_path / "eu.csv").write_text('text;label\n"great; really";1\nbad, very;0\n')
    (tmp_path / "t.csv").write_text("text\tlabel\ngreat\t1\n")
    (tmp_path / "c.csv").write_text("text,label\ngreat; really,1\n")
    assert read_source(SourceConfig(path="eu.csv"), tmp_path) == [{"text": "great; really", "label": "1"},
                                                                   {"text": "bad, very", "label": "0"}]
    assert read_source(SourceConfig(path="t.csv"), tmp_path) == [{"text": "great", "label": "1"}]
    assert read_source(SourceConfig(path="c.csv"), tmp_path) == [{"text": "great; really", "label": "1"}]


def test_a_glob_pattern_reads_every_file_it_matches_in_name_order(tmp_path):
    """Real inputs often come as many files: a day of logs each, or a Hub dataset's Parquet shards.
    ``path: logs/*.jsonl`` reads them in name order (each by its own extension); a bad line names its own
    file; a pattern that matches nothing says so."""
    import bz2
    import gzip
    import json

    from datasets import Dataset

    logs = tmp_path / "logs"
    (logs / "old").mkdir(parents=True)
    (logs / "2026-12-02.jsonl").write_text('{"q": "two"}\n')
    with gzip.open(logs / "2026-12-03.jsonl.gz", "wt") as fh:
        fh.write('{"q": "three"}\n')
    (logs / "2026-12-01.jsonl").write_text('{"q": "one"}\n')
    (logs / "old" / "2026-11-30.jsonl").write_text('{"q": "zero"}\n')
    (logs / "notes.md").write_text("not an input")
    read = lambda path, **kw: [r["text"] for r in read_source(SourceConfig(path=path, fields={"text": "q"}, **kw), tmp_path)]
    assert read("logs/*.jsonl*") == ["one", "two", "three"]
    assert read("logs/**/*.jsonl") == ["one", "two", "zero"]  # ** descends: logs/2026-..., then logs/old/...
    assert read(str(logs / "2026-12-0[12].jsonl")) == ["one", "two"]  # an absolute pattern
    assert read("logs/*.jsonl*", limit=2) == ["one", "two"]
    (logs / "2026-12-04.jsonl").write_text('{"q": "four"}\n{"q": \n')
    with pytest.raises(InputDataError, match=r"2026-12-04.jsonl:2: malformed JSON"):
        read("logs/*.jsonl")
    with pytest.raises(InputDataError, match=r"\*\.csv: no file matches the pattern; fix inputs.source.path"):
        read("logs/*.csv")
    for i, shard in enumerate((["a", "b"], ["c"])):
        Dataset.from_dict({"q": shard}).to_parquet(str(tmp_path / "hub" / "data" / f"train-0000{i}-of-00002.parquet"))
    assert read("hub/data/train-*.parquet") == ["a", "b", "c"]
    with pytest.raises(InputDataError, match=r"not a dataset saved with save_to_disk .*'hub/\*\*/\*.parquet'"):
        read("hub")
    (tmp_path / "t.jsonl.bz2").write_bytes(bz2.compress(json.dumps({"q": "bz"}).encode() + b"\n"))
    assert read("t.jsonl.bz2") == ["bz"]
    with gzip.open(tmp_path / "t.tsv.gz", "wt") as fh:
        fh.write("q\tlabel\ntab, text\t1\n")
    assert read("t.tsv.gz") == ["tab, text"]


def test_a_text_file_is_one_input_a_line(tmp_path):
    """A dump of real queries or posts, one a line, with no header: each non-blank line is the column
    ``text``, kept as written (inner spaces, a trailing space, commas and quotes)."""
    (tmp_path / "posts.txt").write_text('loved it, "really"\r\n\n  lol   same \nbad\n')
    assert read_source(SourceConfig(path="posts.txt"), tmp_path) == [
        {"text": 'loved it, "really"'}, {"text": "  lol   same "}, {"text": "bad"}]
    rows = read_source(SourceConfig(path="posts.txt", fields={"post": "text"}, where={"text": ["bad"]}), tmp_path)
    assert rows == [{"post": "bad"}]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputDataError, match=r"latin1.txt: not UTF-8 text"):
        read_source(SourceConfig(path="latin1.txt"), tmp_path)


def test_a_pattern_source_is_fingerprinted_by_the_files_it_matches(tmp_path):
    """A single file keeps its plain hash (an upgrade re-runs no stage); a pattern's fingerprint changes
    when a file it matches is added or edited, and not otherwise."""
    from types import SimpleNamespace

    from pipeline.hashing import file_sha256
    from pipeline.orchestration.fingerprint import _source_hash

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "1.jsonl").write_text('{"text": "a"}\n')
    task = SimpleNamespace(path=tmp_path, file=lambda rel: tmp_path / rel)
    assert _source_hash(task, SourceConfig(path="d/1.jsonl")) == file_sha256(tmp_path / "d" / "1.jsonl")
    pattern = SourceConfig(path="d/*.jsonl")
    first = _source_hash(task, pattern)
    assert first and _source_hash(task, pattern) == first
    (tmp_path / "d" / "2.jsonl").write_text('{"text": "b"}\n')
    second = _source_hash(task, pattern)
    assert second != first
    (tmp_path / "d" / "2.jsonl").write_text('{"text": "c"}\n')
    third = _source_hash(task, pattern)
    assert third not in (first, second)
    (tmp_path / "d" / "notes.txt").write_text("x")  # a file the pattern does not match changes nothing
    assert _source_hash(task, pattern) == third


def test_fields_may_name_a_path_into_nested_json(tmp_path):
    """Production logs of an OpenAI-style app hold the user's words at request.messages[-1].content and
    the user under meta: ``fields``, ``where`` and ``group_split.field`` take such paths. A column
    whose name has a dot is still that column; a path that leads nowhere is the missing-column error."""
    import json

    from pipeline.inputs import group_fraction

    def log(i, user, role="user"):
        return {"request": {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                            {"role": role, "content": f"question {i}"}]},
                "meta": {"user_id": user, "lang": "en"}, "a.b": f"dotted {i}"}

    rows = [log(i, f"u{i % 7}") for i in range(40)] + [log(99, "u1", role="assistant")]
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = lambda **kw: SourceConfig(path="logs.jsonl", fields={"text": "request.messages[-1].content"}, **kw)
    got = read_source(source(where={"request.messages[1].role": ["user"]}), tmp_path)
    assert got[:2] == [{"text": "question 0"}, {"text": "question 1"}] and len(got) == 40
    held = read_source(source(group_split={"field": "meta.user_id", "holdout_fraction": 0.5, "keep": "holdout"}),
                       tmp_path)
    users = {f"u{int(r['text'].split()[1]) % 7}" for r in held if r["text"] != "question 99"}
    assert users == {f"u{k}" for k in range(7) if group_fraction(f"u{k}") < 0.5} != set()  # whole users, one side
    assert read_source(SourceConfig(path="logs.jsonl", fields={"text": "a.b"}, limit=1), tmp_path) == [{"text": "dotted 0"}]
    assert len(read_source(SourceConfig(path="logs.jsonl", where={"meta.lang": ["en"]}), tmp_path)) == 41
    with pytest.raises(InputDataError, match=r"logs.jsonl:1: column 'request.messages\[5\].content' \(mapped to 'text'\) is missing"):
        read_source(SourceConfig(path="logs.jsonl", fields={"text": "request.messages[5].content"}), tmp_path)


def test_the_report_names_a_pattern_eval_source_with_its_file_count(tmp_path):
    from pipeline.config.task import load_task
    from pipeline.evaluation.eval_inputs import _described

    (tmp_path / "logs").mkdir()
    for day in ("01", "02"):
        (tmp_path / "logs" / f"{day}.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "user.j2").write_text("{{ text }}")
    (tmp_path / "task.yaml").write_text("name: t\nteacher: {backend: openai, model: gpt-4o-mini}\n"
                                        "inputs: {source: {path: logs/01.jsonl}}\noutput: {kind: text}\n"
                                        "eval: {source: {path: logs/*.jsonl}}\n")
    task = load_task(tmp_path)
    assert _described(task, task.file("logs/*.jsonl")) == "logs/*.jsonl (eval.source, 2 files)"
    (tmp_path / "task.yaml").write_text((tmp_path / "task.yaml").read_text().replace("logs/*.jsonl", "logs/02.jsonl"))
    task = load_task(tmp_path)
    assert _described(task, task.file("logs/02.jsonl")) == "02.jsonl (eval.source)"


def test_a_null_cell_is_an_empty_value_and_blank_inputs_are_left_out_with_a_warning(tmp_path):
    """A Hub Parquet file with a null text is read (the column is there; the value is empty), not
    refused as a missing column; rows with no text in any template variable are dropped by
    read_inputs with one line naming the file, the count and the variable."""
    from datasets import Dataset

    from pipeline.inputs import read_inputs

    Dataset.from_dict({"utterance": ["hi there", None, "  ", "book a flight"]}).to_parquet(str(tmp_path / "t.parquet"))
    source = SourceConfig(path="t.parquet", fields={"text": "utterance"})
    assert [r["text"] for r in read_source(source, tmp_path)] == ["hi there", "", "  ", "book a flight"]
    rows, line = read_inputs(source, tmp_path, {"text"})
    assert [r["text"] for r in rows] == ["hi there", "book a flight"]
    assert line.startswith(f"{tmp_path / 't.parquet'}: inputs.source: 2 of 4 inputs have no text in 'text'")
    assert read_inputs(source, tmp_path, set()) == (read_source(source, tmp_path), None)  # no input variables
    with pytest.raises(InputDataError, match=r"column 'utterence' \(mapped to 'text'\) is missing"):
        read_source(SourceConfig(path="t.parquet", fields={"text": "utterence"}), tmp_path)  # a typo still is
