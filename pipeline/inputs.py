"""Read a task's inputs from JSONL, JSON, CSV, plain text (a line each) or Parquet files (one, or all a
glob pattern matches) or an on-disk HF dataset, applying the field mapping.

Every bad row is an InputDataError naming the file and the line. Each input is a plain dict of
template variables; its identity is the hash of that dict (``input_id``), so a growing source
only adds new ids.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.config.base import as_text
from pipeline.config.inputs import SourceConfig
from pipeline.curation.decontam import words
from pipeline.errors import InputDataError
from pipeline.hashing import file_sha256


def input_id(inputs: dict[str, Any]) -> str:
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# file extension -> format; a .gz or .bz2 after it is read through that decompressor
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "csv", ".txt": "txt",
           ".parquet": "parquet"}
GLOB_CHARS = "*?["


def infer_format(path: Path, declared: str | None) -> str:
    if declared:
        return declared
    if path.is_dir():
        return "hf"
    suffixes = path.suffixes
    suffix = suffixes[-2] if path.suffix in (".bz2", ".gz") and len(suffixes) > 1 else path.suffix
    if suffix in FORMATS:
        return FORMATS[suffix]
    raise InputDataError(
        f"{path}: cannot tell the format from the extension; set inputs.source.format (jsonl, json, csv, txt, parquet, hf)")


# one step of a path into a nested row: a key (`request`, `content`) or a list index (`[0]`, `[-1]`)
_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


def lookup(row: dict[str, Any], column: str) -> Any:
    """``row[column]``; when there is no such column, a path into nested JSON (``meta.user_id``,
    ``request.messages[-1].content``: production logs of an OpenAI-style app keep the user's words
    there). None when the path leads nowhere."""
    if column in row or ("." not in column and "[" not in column):
        return row.get(column)
    value: Any = row
    for key, index in _PATH_STEP.findall(column):
        try:
            value = value[int(index)] if index else value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _map_fields(row: dict[str, Any], fields: dict[str, str], where: str) -> dict[str, Any]:
    if not fields:
        return dict(row)
    out = {}
    for var, column in fields.items():
        if column in row and row[column] is None:  # a null cell (Parquet, JSON): an empty value, not a missing column
            out[var] = ""
            continue
        if lookup(row, column) is None:
            if var.startswith("__where_"):
                raise InputDataError(
                    f"{where}: no column '{column}' (named by where / group_split.field); name a column of the "
                    f"file ({', '.join(map(str, row))}) or a variable of fields ({', '.join(k for k in fields if not k.startswith('__'))})"
                )
            raise InputDataError(
                f"{where}: column '{column}' (mapped to '{var}') is missing; fix inputs.source.fields or the row"
            )
        out[var] = lookup(row, column)
    return out


def _open_text(path: Path):
    """A text file as UTF-8, a leading byte-order mark dropped: Excel's "CSV UTF-8" starts with one, and
    read as plain UTF-8 the first column's name became "\ufefftext" (then "column 'text' is missing")."""
    import bz2
    import gzip

    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8-sig", newline="")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _mapped(rows: Iterable[tuple[str, dict[str, Any]]], fields: dict[str, str], limit: int | None) -> list[dict[str, Any]]:
    """``(where it was read, row)`` pairs through the field mapping, the first ``limit`` of them."""
    out = []
    for where, row in rows:
        out.append(_map_fields(row, fields, where))
        if limit and len(out) >= limit:
            break
    return out


def _jsonl_rows(path: Path, lines: Iterable[str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """A JSON-lines file's objects; ``lines``: its lines when they are read already."""
    with contextlib.nullcontext(lines) if lines is not None else _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputDataError(f"{path}:{lineno}: malformed JSON ({exc.msg}); fix or delete the line") from None
            if not isinstance(row, dict):
                raise InputDataError(f"{path}:{lineno}: expected a JSON object per line")
            yield f"{path}:{lineno}", row


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A .json file: one array of objects (``json.dump(rows)``, pandas' ``orient="records"``), or JSON
    lines under a .json name (pandas' ``lines=True``, what ``Dataset.to_json`` writes)."""
    with _open_text(path) as fh:
        text = fh.read()
    if not text.lstrip().startswith("["):
        yield from _jsonl_rows(path, text.splitlines())
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file") from None
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise InputDataError(f"{path}: item {i} of the array is not an object; the file should be a list of rows")
        yield f"{path} item {i}", row


def _txt_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A plain text file: one input per line, in the column ``text`` (a dump of real queries or posts);
    blank lines are skipped. A line's own line breaks cannot be told from the next input's: use JSONL
    for multi-line inputs."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield f"{path}:{lineno}", {"text": text}


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A Parquet file, as the Hub serves datasets (``data/train-00000-of-00001.parquet``), read with
    pyarrow (a dependency of ``datasets``) batch by batch."""
    import pyarrow.parquet as pq

    try:
        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield f"{path} row {n}", row
                n += 1
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise InputDataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())[:160]})") from None


def _delimiter(path: Path, header: str) -> str:
    """Tab for .tsv; else a comma, unless the header has none and one of ``;``, tab or ``|`` instead
    (Excel in locales whose decimal mark is a comma saves "CSV" with semicolons)."""
    if ".tsv" in path.suffixes:
        return "\t"
    if "," not in header:
        for candidate in (";", "\t", "|"):
            if candidate in header:
                return candidate
    return ","


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path) as fh:
        first = fh.readline()
        reader = csv.reader(itertools.chain([first], fh), delimiter=_delimiter(path, first), strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise InputDataError(f"{path}: the CSV is empty; it needs a header row") from None
        except csv.Error as exc:
            raise InputDataError(f"{path}:1: malformed CSV header ({exc})") from None
        try:
            for cells in reader:
                lineno = reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise InputDataError(
                        f"{path}:{lineno}: row has {len(cells)} columns, the header has {len(header)}; "
                        "quote fields that contain the delimiter"
                    )
                yield f"{path}:{lineno}", dict(zip(header, cells))
        except csv.Error as exc:
            raise InputDataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None


def _hf_dataset(path: Path, split: str | None, written: str | None = None):
    """The ``datasets.Dataset`` saved at ``path`` (its ``split`` of a DatasetDict); ``written``: the
    path as task.yaml gives it, for the hint when the folder holds data files instead."""
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 — datasets raises several types for a folder that is not a dataset
        kinds = Counter(p.suffix for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS)
        ext = kinds.most_common(1)[0][0] if kinds else ""
        hint = (f"; to read its {ext} files, set the path to a pattern such as "
                f"'{(written or str(path)).rstrip('/')}/**/*{ext}'") if kinds else ""
        raise InputDataError(f"{path}: not a dataset saved with save_to_disk ({type(exc).__name__}){hint}") from None
    if isinstance(ds, DatasetDict):
        if split is None:
            raise InputDataError(f"{path}: a DatasetDict with splits {list(ds)}; set inputs.source.split")
        if split not in ds:
            raise InputDataError(f"{path}: no split '{split}' (has {list(ds)}); fix inputs.source.split")
        ds = ds[split]
    return ds


def class_labels(source: SourceConfig, base: Path) -> dict[str, list[str]]:
    """Column -> class names, for the columns a saved Hugging Face dataset, or a Parquet file written
    by ``datasets``, stores as a ``datasets.ClassLabel`` (ids 0, 1, ...); empty for other sources, and
    for one that cannot be read (read_source says why)."""
    files = source_files(source, base)
    path = files[0] if files else _source_path(source, base)
    fmt = infer_format(path, source.format) if path.exists() else None
    if fmt == "parquet":
        return _parquet_class_labels(path)  # a sharded set's files share one schema
    if fmt != "hf":
        return {}
    from datasets import ClassLabel

    try:
        features = _hf_dataset(path, source.split).features
    except InputDataError:
        return {}
    return {column: list(f.names) for column, f in features.items() if isinstance(f, ClassLabel)}


def class_label_names(source: SourceConfig, base: Path, field: str) -> list[str] | None:
    """The class names of ``field`` (a variable of ``source.fields``, or a column), else None."""
    return class_labels(source, base).get(dict(source.fields).get(field, field))


def _parquet_class_labels(path: Path) -> dict[str, list[str]]:
    """The ClassLabels of the ``huggingface`` schema metadata that ``datasets`` writes into its Parquet files."""
    import pyarrow.parquet as pq

    try:
        meta = (pq.read_schema(path).metadata or {}).get(b"huggingface")
        features = json.loads(meta)["info"]["features"] if meta else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {column: [str(n) for n in f["names"]] for column, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and f.get("names")}


def _source_path(source: SourceConfig, base: Path) -> Path:
    path = Path(source.path).expanduser()
    return path if path.is_absolute() else base / path


def is_pattern(source: SourceConfig) -> bool:
    return any(c in source.path for c in GLOB_CHARS)


def source_files(source: SourceConfig, base: Path) -> list[Path]:
    """The files a source reads: its path, or, when the path is a glob pattern (``logs/*.jsonl``,
    ``data/train-*.parquet``, ``posts/**/*.csv``), the files it matches in name order, so a folder of
    daily files reads oldest first and a new day's file only adds inputs."""
    path = _source_path(source, base)
    if not is_pattern(source):
        return [path]
    anchor = Path(path.anchor)
    return sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())


def source_hashes(source: SourceConfig | None, base: Path) -> dict[str, str]:
    """``{path: sha256}`` of every file a source reads (a saved dataset's folder hashes as a whole)."""
    if source is None:
        return {}
    return {str(p): h for p in source_files(source, base) if (h := file_sha256(p)) is not None}


def read_source(source: SourceConfig, base: Path, section: str = "inputs.source") -> list[dict[str, Any]]:
    """All inputs of a source (after the field mapping), in file order. ``section`` names the
    task.yaml section in messages (``inputs.source`` or ``eval.source``)."""
    path = _source_path(source, base)
    files = source_files(source, base)
    if not files:
        raise InputDataError(f"{path}: no file matches the pattern; fix {section}.path (relative to the task folder)")
    if not files[0].exists():
        hint = " (a fetched corpus: run `make setup`)" if "external" in path.parts else ""
        raise InputDataError(f"{path}: input file not found{hint}; fix {section}.path (relative to the task folder)")
    formats = {f: infer_format(f, source.format) for f in files}
    fmt = formats[files[0]]
    fields = dict(source.fields)
    filter_columns = list(source.where) + ([source.group_split.field] if source.group_split else [])
    # `where` and `group_split.field` name a column of the file, or a variable of `fields` (the README's
    # "split by row with field: text" where `text` is read from a column called `sentence`)
    column_of = {name: source.fields.get(name, name) for name in filter_columns}
    if fields:  # carry the `where` / group columns through the mapping until the rows are filtered
        for name in filter_columns:
            fields.setdefault(f"__where_{name}", column_of[name])
    limit = None if (filter_columns or source.sample) else source.limit
    readers = {"jsonl": _jsonl_rows, "json": _json_rows, "csv": _csv_rows, "txt": _txt_rows, "parquet": _parquet_rows,
               "hf": lambda p: ((f"{p} row {i}", row) for i, row in enumerate(_hf_dataset(p, source.split, source.path)))}

    def every_file() -> Iterator[tuple[str, dict[str, Any]]]:
        for f in files:
            try:
                yield from readers[formats[f]](f)
            except UnicodeDecodeError:
                raise InputDataError(f"{f}: not UTF-8 text; re-encode the file as UTF-8") from None
            except OSError as exc:
                raise InputDataError(f"{f}: cannot read ({exc.strerror or exc})") from None

    rows = _mapped(every_file(), fields, limit)
    key = (lambda c: f"__where_{c}") if source.fields else (lambda c: c)
    if source.where:
        where = {c: set(vals) for c, vals in source.where.items()}
        classes = class_labels(source, base) if fmt in ("hf", "parquet") else {}
        for c, vals in where.items():  # a ClassLabel column stores ids: `where: {label: [negative]}` means its id
            vals.update(str(i) for i, name in enumerate(classes.get(column_of[c], [])) if name in vals)
        rows = [r for r in rows if all(as_text(lookup(r, key(c))) in vals for c, vals in where.items())]
    if source.group_split:
        split = source.group_split
        if rows and key(split.field) not in rows[0] and lookup(rows[0], key(split.field)) is None:
            raise InputDataError(f"{path}: no column '{split.field}'; fix {section}.group_split.field")
        held = split.keep == "holdout"
        group = group_key(column_of[split.field], source.fields)
        rows = [r for r in rows if (group_fraction(group(lookup(r, key(split.field)))) < split.holdout_fraction) == held]
    if filter_columns and source.fields:
        rows = [{k: v for k, v in r.items() if not k.startswith("__where_")} for r in rows]
    if source.sample and source.sample < len(rows):
        keep = set(sorted(range(len(rows)), key=lambda i: input_id(rows[i]))[: source.sample])
        rows = [r for i, r in enumerate(rows) if i in keep]
    if source.limit and (filter_columns or source.sample):
        rows = rows[: source.limit]
    return rows


def without_blank_inputs(rows: list[dict[str, Any]], variables: set[str]) -> tuple[list[dict[str, Any]], int]:
    """(the rows with text in at least one of ``variables``, the templates' input variables; how many
    had none). A blank input (an empty CSV cell, a null) would ask the teacher a prompt with nothing
    to answer about, and pay for it. With no input variables every row is kept, and so is a row that
    lacks one of them (the template's own error names the variable)."""
    if not variables:
        return rows, 0

    def blank(row: dict[str, Any]) -> bool:
        return all(v in row and not str(row[v] if row[v] is not None else "").strip() for v in variables)

    kept = [r for r in rows if not blank(r)]
    return kept, len(rows) - len(kept)


def read_inputs(source: SourceConfig, base: Path, variables: set[str],
                section: str = "inputs.source") -> tuple[list[dict[str, Any]], str | None]:
    """``read_source`` less the blank inputs (``without_blank_inputs``), and the warning naming them."""
    rows = read_source(source, base, section)
    kept, blank = without_blank_inputs(rows, variables)
    return kept, blank_inputs_line(section, _source_path(source, base), blank, len(rows), variables)


def blank_inputs_line(section: str, path: Path, blank: int, total: int, variables: set[str]) -> str | None:
    if not blank:
        return None
    names = ", ".join(f"'{v}'" for v in sorted(variables))
    return (f"{path}: {section}: {blank} of {total} inputs have no text in {names} (an empty cell or a null): "
            "skipped, since the teacher would be asked a prompt without its input; drop them from the file to "
            "silence this")


def group_key(column: str, fields: dict[str, str]):
    """What identifies a row's group. A group column of its own (a movie, a user) is taken as it is. A
    column the template reads (a split by row, ``field: text``) is taken as decontamination compares
    it, case-folded words, so that variants of one text ("I LOVE this!!", "I love this.") fall on one
    side instead of one variant training the student and the other evaluating it (social posts repeat
    with small edits). ``fields``: the source's mapping; without one every column is an input."""
    if fields and column not in fields.values():
        return lambda value: value
    return lambda value: " ".join(words(str(value)))


def group_fraction(value: Any) -> float:
    """A group's fixed place in [0, 1): the first 8 bytes of SHA-256 of its text."""
    digest = hashlib.sha256(str(value).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def written_stand_in(gen, real: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """What validate and preview render for a teacher-written input before it exists: ``text`` in
    ``gen.field``, and, with real inputs mixed in, the first real input's other fields (the same
    template renders both)."""
    return {**(real[0] if real else {}), gen.field: text}


def input_writing_variables(gen) -> list[dict[str, Any]]:
    """The template variables of each request that asks the teacher to write one input
    (``inputs.generate``): every seed combination crossed with the attribute grid, cycled until
    ``count`` requests, each with a ``variant`` index so repeats of one combination differ.
    Deterministic, so a re-run asks the same requests (and hits the cache)."""
    axes = {**gen.seeds, **gen.grid}
    names = list(axes)
    combos = [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))] or [{}]
    out = []
    for i in range(gen.count):
        combo = dict(combos[i % len(combos)])
        combo["variant"] = i // len(combos)
        out.append(combo)
    return out
