"""The evaluation set: real inputs with their gold answers, or the held-out split.

Reads:  eval.source (JSONL/CSV/HF, with the field mapping) and eval.gold_field / eval.gold_map, or
        data/<task>/versions/<v>/eval.jsonl (TrainRow) and data/<task>/generated/generated.jsonl
Writes: nothing.

Gold values are parsed like answers (a label from the set, a JSON object, or text), so a gold
value that is none of the labels is an error naming the file, the row and the fix, not a silent
miss. The gold field is removed from an input before it is prompted, so the prompt (and the
teacher's cached answer) is the same as for the same input without a gold answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.base import as_text
from pipeline.config.task import TaskFolder
from pipeline.errors import ConfigError, InputDataError
from pipeline.evaluation import metrics as m
from pipeline.hashing import file_sha256
from pipeline.inputs import input_id, is_pattern, read_inputs, source_files, source_hashes
from pipeline.paths import TaskPaths
from pipeline.prompts import PromptRenderer
from pipeline.records import Message, Record, TrainRow, iter_jsonl_with_errors, read_jsonl


@dataclass
class EvalSet:
    description: str  # where the inputs came from, for the report
    ids: list[str]
    inputs: list[dict[str, Any]]
    prompts: list[list[Message]]  # exactly what the teacher was asked; the student gets the same
    teacher_texts: list[str]
    teacher_records: list[Record | None]  # None: no generation record (no latency or usage known)
    golds: list[Any] | None  # parsed gold answers; None when the inputs have none
    schema: dict | None = None
    teacher_cached: int = 0
    teacher_new: int = 0
    input_hashes: dict[str, str] = field(default_factory=dict)  # {path: sha256} of the files read


def load_json_schema(task: TaskFolder) -> dict | None:
    out = task.config.output
    if out.kind != "json":
        return None
    if out.json_schema is not None:
        return out.json_schema
    path = task.file(out.json_schema_file)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the JSON Schema ({exc.strerror}); fix output.json_schema_file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: malformed JSON Schema ({exc.msg})") from None


def gold_class_names(task: TaskFolder) -> list[str] | None:
    """The names of eval.gold_field's classes when eval.source (a saved Hugging Face dataset, or a
    Parquet file written by ``datasets``) stores it as a ``ClassLabel`` (ids), as most labelled sets are."""
    from pipeline.inputs import class_label_names

    ev = task.config.eval
    return class_label_names(ev.source, task.path, ev.gold_field) if ev.source and ev.gold_field else None


def gold_name(value: Any, class_names: list[str] | None) -> str:
    """A gold value as the user knows it: a ``ClassLabel`` id's class name, else the value."""
    key = as_text(value)
    return class_names[int(key)] if class_names and key.isdigit() and int(key) < len(class_names) else key


def unlabelled_class_id(value: Any, class_names: list[str] | None) -> bool:
    """A ``ClassLabel``'s -1: "no label", what the Hub's unlabelled splits hold (GLUE's test sets,
    IMDb's ``unsupervised``); no gold_map can make it a gold answer."""
    return bool(class_names) and as_text(value) == "-1"


def unlabelled_split_fix(class_names: list[str], gold_field: str) -> str:
    names = ", ".join(class_names)
    return (f"point eval.source at a labelled split (the Hub's validation split, where its test split is "
            f"unlabelled), or keep the labelled rows with eval.source.where: {{{gold_field}: [{names}]}}")


def suggested_gold_map(values: list[str], labels: list[str]) -> dict[str, str] | None:
    """{value: label} when each gold value begins exactly one label, and no two the same one (``neg`` ->
    ``negative``, ``pos`` -> ``positive``), for an error to offer as its fix; else None."""
    found = {}
    for v in values:
        hits = [lab for lab in labels if v and lab.lower().startswith(v.lower())]
        if len(hits) != 1:
            return None
        found[v] = hits[0]
    return found if len(set(found.values())) == len(found) else None


def parse_gold(value: Any, task: TaskFolder, where: str, class_names: list[str] | None = None) -> Any:
    """A gold value as its output kind's value, after eval.gold_map; a ``ClassLabel`` id without a
    gold_map entry is its class name (``class_names``, from ``gold_class_names``)."""
    cfg = task.config
    raw, key = value, as_text(value)
    if key in cfg.eval.gold_map:
        value = cfg.eval.gold_map[key]
    elif (name := gold_name(value, class_names)) != key:
        value = cfg.eval.gold_map.get(name, name)  # the id's class name, which gold_map may map in turn
    kind = cfg.output.kind
    if unlabelled_class_id(raw, class_names) and key not in cfg.eval.gold_map:
        raise InputDataError(f"{where}: gold value -1 is a ClassLabel's 'no label' (an unlabelled split); "
                             + unlabelled_split_fix(class_names or [], cfg.eval.gold_field or "label"))
    if kind == "label":
        label = m.parse_label(str(value), cfg.output.labels or [], cfg.output.normalize)
        if label is None:
            raise InputDataError(
                f"{where}: gold value {raw!r}{f' ({value!r})' if value != raw else ''} is none of the labels "
                f"{cfg.output.labels}; map it with eval.gold_map "
                "or drop such rows with eval.source.where"
            )
        return label
    if kind == "json":
        obj = value if isinstance(value, dict) else m.parse_json_object(str(value))
        if obj is None:
            raise InputDataError(f"{where}: gold value is not a JSON object; fix the row or eval.gold_field")
        return obj
    return str(value)


def read_eval_source(task: TaskFolder, limit: int | None) -> tuple[list[dict], list[Any] | None, Path]:
    """The real inputs of eval.source (gold field split off and parsed), in file order; with a
    limit, a deterministic sample spread over the whole file (real files are often grouped: the
    Rotten Tomatoes snippets come movie by movie, so the first N rows are not representative)."""
    cfg = task.config.eval
    path = task.file(cfg.source.path)
    rows, _ = read_inputs(cfg.source, task.path, PromptRenderer.for_task(task).input_variables(), "eval.source")
    if limit and limit < len(rows):
        keep = set(sorted(range(len(rows)), key=lambda i: input_id(rows[i]))[:limit])  # hash order: stable, unbiased
        rows = [r for i, r in enumerate(rows) if i in keep]
    if not rows:
        raise InputDataError(f"{path}: no eval inputs (check eval.source.where and the file)")
    if cfg.gold_field is None:
        return rows, None, path
    golds, names = [], gold_class_names(task)
    for i, row in enumerate(rows, start=1):
        if cfg.gold_field not in row:
            raise InputDataError(
                f"{path}: input {i} has no field '{cfg.gold_field}' (eval.gold_field); "
                "map it in eval.source.fields or unset eval.gold_field"
            )
        golds.append(parse_gold(row.pop(cfg.gold_field), task, f"{path}: input {i}", names))
    return rows, golds, path


def read_generated_records(path: Path) -> dict[str, Record]:
    """generated.jsonl by record id (bad lines are skipped: they only cost us latency figures)."""
    if not path.exists():
        return {}
    return {row.id: row for _, row, err in iter_jsonl_with_errors(path, Record) if err is None}


def held_out_set(task: TaskFolder, dataset_version: str | None, limit: int | None) -> EvalSet:
    """The dataset's eval split: prompts and the teacher's answers as curated, with latency and
    usage from the generation records. Nothing is sent to the teacher."""
    paths = TaskPaths(task.name)
    version_dir = paths.version_dir(dataset_version)
    eval_path = version_dir / "eval.jsonl"
    if not eval_path.exists():
        raise InputDataError(
            f"{eval_path}: no held-out split (dataset version '{version_dir.name}'); set eval.source to real inputs "
            "or re-run `distill curate` with split.eval_fraction > 0"
        )
    rows: list[TrainRow] = list(read_jsonl(eval_path, TrainRow))[: limit or None]
    if not rows:
        raise InputDataError(f"{eval_path}: the held-out split is empty; set eval.source or raise split.eval_fraction")
    by_id = read_generated_records(paths.generated_jsonl)
    records = [by_id.get(r.id) for r in rows]
    hashes = {str(eval_path): file_sha256(eval_path)}
    if paths.generated_jsonl.exists():
        hashes[str(paths.generated_jsonl)] = file_sha256(paths.generated_jsonl)
    return EvalSet(
        description=f"the held-out split of dataset {version_dir.name}",
        ids=[r.id for r in rows],
        inputs=[rec.inputs if rec else {} for rec in records],
        prompts=[list(r.prompt) for r in rows],
        teacher_texts=[r.completion[0].content if r.completion else "" for r in rows],
        teacher_records=records,
        golds=None,
        schema=load_json_schema(task),
        teacher_cached=len(rows),
        input_hashes=hashes,
    )


def _described(task: TaskFolder, path: Path) -> str:
    """The eval source in the report: its file's name, or a pattern with how many files it matched."""
    source = task.config.eval.source
    if source is None or not is_pattern(source):
        return f"{path.name} (eval.source)"
    return f"{source.path} (eval.source, {len(source_files(source, task.path))} files)"


def source_set(task: TaskFolder, inputs: list[dict], golds: list[Any] | None, records: list[Record],
               path: Path) -> EvalSet:
    """Real inputs with the teacher's answers (``records``, one per input, in order)."""
    if len(records) != len(inputs):
        raise RuntimeError(f"the generate stage answered {len(records)} of {len(inputs)} inputs")
    return EvalSet(
        description=_described(task, path),
        ids=[r.id for r in records],
        inputs=inputs,
        prompts=[list(r.messages) for r in records],
        teacher_texts=[r.completion for r in records],
        teacher_records=list(records),
        golds=golds,
        schema=load_json_schema(task),
        teacher_cached=sum(r.cached for r in records),
        teacher_new=sum(not r.cached for r in records),
        input_hashes=source_hashes(task.config.eval.source, task.path) or {str(path): file_sha256(path)},
    )
