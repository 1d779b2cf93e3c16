"""task.yaml and the other YAML files are read with YAML 1.2's scalars (pipeline/yaml_io.py), so what
a user writes is what the data files hold: a yes/no task's labels are "yes" and "no", class ids in a
gold map are the ids, and numbers are numbers as in JSON."""
from __future__ import annotations

from pipeline import yaml_io


def test_yaml_1_2_scalars():
    got = yaml_io.load("a: [yes, no, on, off, y, true, False, ~, 012, 0o17, 0x1f, 10_000, 1:30, 1e-4, .5, 2., .inf]")
    assert got["a"][:8] == ["yes", "no", "on", "off", "y", True, False, None]  # PyYAML: True, False, True, False
    assert got["a"][8:13] == [12, 15, 31, 10000, "1:30"]  # PyYAML: 10 (octal), and 90 (sexagesimal)
    assert got["a"][13:16] == [1e-4, 0.5, 2.0] and got["a"][16] == float("inf")
    assert all(type(v) is int for v in got["a"][8:12])
    assert yaml_io.load('b: "012"\nc: !!int "7"') == {"b": "012", "c": 7}


def _task(tmp_path, output: str, extra: str = ""):
    from pipeline.config.task import load_task

    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    (folder / "user.j2").write_text("{{ text }}")
    (folder / "inputs.jsonl").write_text('{"text": "a"}\n')
    (folder / "task.yaml").write_text(
        "name: t\nteacher: {backend: openai, model: gpt-4o-mini}\n"
        f"inputs: {{source: {{path: inputs.jsonl}}}}\noutput: {output}\n{extra}")
    return load_task(folder).config


def test_a_yes_no_task_and_numeric_labels_load_as_the_text_the_data_holds(tmp_path):
    """``labels: [yes, no]`` was ``[True, False]`` (a one-line error, but a puzzling one), and
    ``labels: [1, 2, 3]`` (star ratings) or ``gold_map: {0: negative}`` (a Hugging Face dataset's
    class ids) were refused as "not a valid string"."""
    cfg = _task(tmp_path, "{kind: label, labels: [yes, no]}",
                "eval: {source: {path: inputs.jsonl}, gold_field: spam, gold_map: {Yes: yes, N: no}}\n")
    assert cfg.output.labels == ["yes", "no"] and cfg.eval.gold_map == {"Yes": "yes", "N": "no"}
    cfg = _task(tmp_path, "{kind: label, labels: [1, 2, 3, 4, 5]}",
                "eval: {source: {path: inputs.jsonl}, gold_field: stars, gold_map: {0: 1, 1.5: 2}}\n")
    assert cfg.output.labels == ["1", "2", "3", "4", "5"] and cfg.eval.gold_map == {"0": "1", "1.5": "2"}


def test_boolean_gold_values_map_whatever_the_file_spells_them(tmp_path):
    """A binary set often stores its label as a boolean (JSONL ``true``, a pandas CSV ``True``):
    ``gold_map: {true: spam, false: ham}`` and ``where: {is_spam: [true]}`` match every spelling."""
    from pipeline.config.inputs import SourceConfig
    from pipeline.config.task import load_task
    from pipeline.evaluation.eval_inputs import parse_gold
    from pipeline.inputs import read_source

    (tmp_path / "e.jsonl").write_text('{"text": "win $$$", "is_spam": true}\n{"text": "hi mum", "is_spam": false}\n')
    (tmp_path / "e.csv").write_text("text,is_spam\nwin $$$,True\nhi mum,False\nlunch?,FALSE\n")
    for name in ("e.jsonl", "e.csv"):
        kept = read_source(SourceConfig.model_validate(yaml_io.load(f"{{path: {name}, where: {{is_spam: [true]}}}}")),
                           tmp_path)
        assert [r["text"] for r in kept] == ["win $$$"], name
    _task(tmp_path, "{kind: label, labels: [spam, ham]}",
          "eval: {source: {path: e.jsonl}, gold_field: is_spam, gold_map: {true: spam, False: ham}}\n")
    task = load_task(tmp_path / "t")
    assert task.config.eval.gold_map == {"true": "spam", "false": "ham"}
    assert [parse_gold(v, task, "") for v in (True, "True", "false", "FALSE")] == ["spam", "spam", "ham", "ham"]


def test_class_ids_written_as_floats_meet_an_integer_gold_map(tmp_path):
    """pandas writes an integer column that holds one missing value as floats (``"label": 1.0`` in
    ``to_json``, ``1.0`` in a CSV, a float Parquet column): ``gold_map: {1: positive}`` and
    ``where: {label: [0, 1]}`` still meet those ids, and a ``1.0:`` key in task.yaml is the id 1."""
    from pipeline.config.inputs import SourceConfig
    from pipeline.config.task import load_task
    from pipeline.evaluation.eval_inputs import parse_gold
    from pipeline.inputs import read_source

    (tmp_path / "e.jsonl").write_text('{"text": "great", "label": 1.0}\n{"text": "dull", "label": 0.0}\n'
                                      '{"text": "meh", "label": null}\n{"text": "odd", "label": 0.5}\n')
    kept = read_source(SourceConfig.model_validate(yaml_io.load("{path: e.jsonl, where: {label: [0, 1]}}")), tmp_path)
    assert [r["text"] for r in kept] == ["great", "dull"]
    _task(tmp_path, "{kind: label, labels: [negative, positive]}",
          "eval: {source: {path: e.jsonl}, gold_field: label, gold_map: {0: negative, 1.0: positive}}\n")
    task = load_task(tmp_path / "t")
    assert task.config.eval.gold_map == {"0": "negative", "1": "positive"}
    assert [parse_gold(v, task, "") for v in (1.0, 0.0, 1, "0")] == ["positive", "negative", "positive", "negative"]
    # a ClassLabel's ids read as floats are still its names
    _task(tmp_path, "{kind: label, labels: [negative, positive]}", "eval: {source: {path: e.jsonl}, gold_field: label}\n")
    assert parse_gold(1.0, load_task(tmp_path / "t"), "", class_names=["negative", "positive"]) == "positive"
