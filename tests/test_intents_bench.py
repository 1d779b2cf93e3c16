"""bench/intents.py's data and task: what a new user gets from a Hub dataset of intents and the README."""
from __future__ import annotations

from collections import Counter

from bench.intents import INTENTS, build_task, messages, write_hub_files
from pipeline.config.task import load_task
from pipeline.evaluation.eval_inputs import read_eval_source
from pipeline.inputs import read_source
from pipeline.stages.validate import validate_task


def test_the_messages_are_distinct_balanced_and_the_same_every_run():
    rows = messages(12)
    assert rows == messages(12) and len({t for t, _ in rows}) == len(rows) == 12 * len(INTENTS)
    assert Counter(i for _, i in rows) == {i: 12 for i in range(len(INTENTS))}


def test_the_task_reads_the_shards_by_glob_and_the_gold_ids_as_intent_names(tmp_path):
    assert write_hub_files(tmp_path / "hub", 10) == 70
    assert sorted(p.name for p in (tmp_path / "hub" / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    task = load_task(build_task(tmp_path))
    inputs = read_source(task.config.inputs.source, task.path)
    eval_rows, golds, _ = read_eval_source(task, None)
    assert len(inputs) == 56 and len(eval_rows) == 14  # both train shards; the test shard
    assert not {r["text"] for r in inputs} & {r["text"] for r in eval_rows}
    assert set(golds) <= set(INTENTS) and len(set(golds)) > 3  # ClassLabel ids read as their names
    report = validate_task(str(task.path))
    assert not report.problems, report.problems


def test_asking_for_more_messages_than_the_templates_write_is_an_error_not_a_hang():
    import pytest

    with pytest.raises(SystemExit, match="the templates write only"):
        messages(10_000)


def test_the_readmes_own_labels_example_is_a_valid_task(tmp_path):
    """The YAML and template under README's "Your own labels", applied to a copy of prompts/sentiment
    as the text says (the two sources replaced whole, gold_map dropped), read real shards."""
    import re
    import shutil

    import yaml

    from pipeline import yaml_io
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Your own labels"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    template = re.search(r"```jinja\n(.*?)```", section, re.DOTALL).group(1)
    example = yaml_io.load(block.replace("my_intents/", str(tmp_path / "hub") + "/"))
    write_hub_files(tmp_path / "hub", 10)
    folder = tmp_path / "task"
    shutil.copytree(REPO / "prompts" / "sentiment", folder)
    cfg = yaml_io.load((folder / "task.yaml").read_text())
    cfg["inputs"] = example["inputs"]
    cfg["output"]["labels"] = example["output"]["labels"]
    cfg["eval"]["source"] = example["eval"]["source"]
    cfg["eval"]["gold_field"] = example["eval"]["gold_field"]
    cfg["eval"].pop("gold_map")
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "user.j2").write_text(template)
    task = load_task(folder)
    eval_rows, golds, _ = read_eval_source(task, None)
    report = validate_task(str(folder))
    assert not report.problems, report.problems
    assert example["output"]["labels"] == INTENTS and set(golds) <= set(INTENTS)
    assert len(read_source(task.config.inputs.source, task.path)) == 56 and len(eval_rows) == 14
