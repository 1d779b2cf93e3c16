"""``distill curate <task>``: turn the teacher's raw answers into a versioned dataset.

Reads:  data/<task>/generated/generated.jsonl (Record per line); the task's eval.source and
        decontam.extra_files (for decontamination); prompts/<task>/ (config, templates, schema).
Writes: data/<task>/versions/<YYYYmmddTHHMMSSZ>/
            train.jsonl, eval.jsonl   TrainRow per line (TRL conversational prompt-completion)
            rejected.jsonl            every dropped record (or corrupt line) with its reason
            dataset/                  datasets.DatasetDict (train, eval), save_to_disk
            README.md                 the dataset card
            manifest.json             inputs, config, counts per reason, timings
        data/<task>/latest           the new version's folder name

Steps: parse + filter each answer (pipeline/curation/screen.py), dedupe (exact, then MinHash LSH),
decontaminate against the eval inputs, split by hash, write. A corrupt line in generated.jsonl
stops the stage with ``--strict``; otherwise it is reported (stderr, rejected.jsonl, manifest).
The version is written to a hidden folder and renamed at the end, so a failed build leaves nothing
half-written and ``latest`` is untouched.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config.task import TaskFolder, load_task
from pipeline.curation import build, decontam
from pipeline.curation.dedupe import dedupe, lsh_bands
from pipeline.curation.screen import Screener, soft_label_gaps, soft_label_warning
from pipeline.errors import ConfigError, InputDataError
from pipeline.hashing import file_sha256
from pipeline.inputs import read_source, source_hashes
from pipeline.orchestration.lock import TaskLock
from pipeline.paths import TaskPaths
from pipeline.records import Record, iter_jsonl_with_errors, write_jsonl
from pipeline.stages.notices import warn

HELP = "Parse, filter, dedupe and decontaminate generated answers into a versioned dataset."
MAX_REPORTED = 10  # corrupt lines printed one by one before summarising


def read_generated(path: Path, *, strict: bool, quiet: bool) -> tuple[list[Record], list[dict]]:
    """The records, and one rejected row per corrupt line (never skipped silently)."""
    if not path.exists():
        raise InputDataError(f"{path}: no generated answers; run `distill generate` first")
    records, corrupt = [], []
    try:
        rows = list(iter_jsonl_with_errors(path, Record))
    except UnicodeDecodeError as exc:  # the reader decodes as it goes, so one bad byte ends the file
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputDataError(f"{path}:{line}: not UTF-8 text; fix or delete that line") from None
    for lineno, record, err in rows:
        if err is None:
            records.append(record)
            continue
        if strict:
            raise InputDataError(f"{path}:{lineno}: {err}; or rerun with --no-strict to report and skip bad lines")
        corrupt.append({"reason": "corrupt_line", "detail": err, "line": lineno})
        if not quiet and len(corrupt) <= MAX_REPORTED:
            print(f"warning: {path}:{lineno}: {err}; skipped (see rejected.jsonl)", file=sys.stderr)
    if corrupt:
        lines = {c["line"] for c in corrupt}
        with path.open(encoding="utf-8", errors="replace") as fh:
            raw = {n: line.rstrip("\n") for n, line in enumerate(fh, start=1) if n in lines}
        for c in corrupt:
            c["raw"] = raw.get(c["line"], "")[:2000]
    return records, corrupt


def dedupe_fields(task: TaskFolder) -> list[str] | None:
    """The input fields dedupe compares; None means every string field. With teacher-written inputs
    the seed and grid values (genre, aspect...) repeat across inputs by design, so only the written
    text is compared."""
    cfg = task.config
    if cfg.dedupe.fields is not None:
        return cfg.dedupe.fields
    return [cfg.inputs.generate.field] if cfg.inputs.generate is not None else None


def near_dedupe(task: TaskFolder) -> bool:
    """``dedupe.near``, or when unset: on where the compared text is the teacher's (written inputs, its
    answers), off where it is the user's own inputs alone. The near-duplicate defaults are tuned to a
    teacher's rewrites (docs/curate.md); two real messages one word apart ("my debit card was stolen in
    Rome" / "... in Lisbon") are two requests the student will serve, already answered and paid for.
    On 560 templated intent messages near-dedupe dropped 261, and the student trained on the rest
    agreed with its teacher on 67.1% of 140 held-out messages; on all 560, 72.1% (bench/intents.py)."""
    dcfg = task.config.dedupe
    if dcfg.near is not None:
        return dcfg.near
    return task.config.inputs.generate is not None or dcfg.compare != "input"


def split_groups(task: TaskFolder, records: list[Record], near: bool) -> list[int] | None:
    """Where duplicates were kept (near-dedupe off, or dedupe off), each record's group for the split:
    the index of the near duplicate it sorts with, by dedupe's own rule (``dedupe.kept_by`` without
    dropping anything), so the eval split that early stopping reads holds no near copy of a training
    row. None when near-dedupe already ran: nothing is left to group."""
    dcfg = task.config.dedupe
    if (dcfg.enabled and near) or len(records) < 2:
        return None
    compare = dcfg.compare if dcfg.enabled else "input"
    texts = [compare_text(r, compare, dedupe_fields(task)) for r in records]
    return dedupe(texts, exact=True, near=True, threshold=dcfg.threshold, shingle_size=dcfg.shingle_size,
                  num_perm=dcfg.num_perm, num_bands=dcfg.num_bands, min_words=dcfg.min_words).kept_by


def compare_text(record: Record, compare: str, fields: list[str] | None = None) -> str:
    # a real input mixed with teacher-written ones may lack the written field: compare all of its own
    keys = [k for k in fields if k in record.inputs] if fields is not None else []
    keys = keys or sorted(record.inputs)
    inputs = "\n".join(record.inputs[k] for k in keys if isinstance(record.inputs.get(k), str))
    if compare == "input":
        return inputs
    if compare == "output":
        return record.completion
    return inputs + "\n" + record.completion


def build_eval_index(task: TaskFolder) -> decontam.EvalIndex:
    cfg = task.config
    index = decontam.EvalIndex(n=cfg.decontam.ngram)
    if cfg.eval.source is not None:
        try:
            rows = read_source(cfg.eval.source, task.path, "eval.source")
        except InputDataError as exc:
            raise InputDataError(
                f"eval.source (read for decontamination): {exc}; fetch the file (make setup) or set decontam.enabled: false"
            ) from None
        for row in rows:
            for key, value in row.items():
                if key != cfg.eval.gold_field and isinstance(value, str):
                    index.add(value, "eval.source")
    for extra in cfg.decontam.extra_files:
        for text in decontam.read_extra_file(task.file(extra), cfg.decontam.field):
            index.add(text, extra)
    return index


def contamination(record: Record, index: decontam.EvalIndex) -> tuple[str, str] | None:
    texts = [v for v in record.inputs.values() if isinstance(v, str)] + [record.completion]
    for text in texts:
        hit = index.match(text)
        if hit:
            return hit
    return None


def teacher_calibration(task: TaskFolder, records: list[Record], content_free: list[Record]) -> dict | None:
    """The calibration weights of ``output.calibrate`` for this run (pipeline/curation/soft_labels.py);
    ``prior``'s, with ``configured`` and a ``fallback`` warning, when the overshoot guard fires."""
    from pipeline.curation.soft_labels import calibration_overshoot, calibration_weights, label_distribution

    out = task.config.output
    if out.kind != "label" or out.calibrate == "none":
        return None

    def dists(rs: list[Record]) -> list[dict[str, float]]:
        found = (label_distribution(r, out.labels, out.normalize.aliases, out.label_codes) for r in rs)
        return [d[0] for d in found if d is not None]

    if out.calibrate in ("content_free", "em") and not content_free:
        raise ConfigError(
            f"{TaskPaths(task.name).content_free_jsonl}: no content-free answers for output.calibrate "
            f"'{out.calibrate}'; re-run `distill generate {task.name}` (it asks them)"
        )
    train = dists(records)
    calibration = calibration_weights(out.calibrate, train, out.labels, dists(content_free))
    if calibration is None or out.calibrate not in ("content_free", "em") or not out.calibrate_fallback:
        return calibration
    fallback = calibration_weights("prior", train, out.labels)  # not None: the run has soft labels
    over = calibration_overshoot(train, out.labels, calibration["weights"], fallback["weights"])
    if over is None:
        return calibration
    named, them = ", ".join(f"'{lab}'" for lab in over["labels"]), ("it" if len(over["labels"]) == 1 else "them")
    cf = ", ".join(f"{calibration['content_free'][lab]:.1%}" for lab in over["labels"])
    warning = (f"warning: {task.path / 'task.yaml'}: output.calibrate '{out.calibrate}' makes {named} the "
               f"answer for {over['share']:.0%} of the transfer set, where dividing by the run's mean makes {them} the "
               f"answer for {over['prior_share']:.0%}: the content-free answers gave {them} "
               f"{cf}, too little to estimate {'its' if them == 'it' else 'their'} bias from; this version is calibrated "
               f"with 'prior' (set output.calibrate: prior, or output.calibrate_fallback: false to keep '{out.calibrate}')")
    return {**fallback, "configured": out.calibrate, "overshoot": over, "fallback": warning,
            "configured_weights": calibration["weights"]}


def rejected_row(record: Record, reason: str, detail: str | None, **extra: Any) -> dict:
    return {"reason": reason, "detail": detail, **extra, "record": record.model_dump(mode="json")}


def run_curate(task: TaskFolder, *, quiet: bool = False, strict: bool = False) -> dict:
    """Build a new dataset version from generated.jsonl; returns the manifest it wrote. Two builds
    of one task at once would race for the version name and ``latest``: the second gets LockedError.
    (Not the task's run lock: ``distill run`` holds that while it calls this.)"""
    paths = TaskPaths(task.name)
    paths.root.mkdir(parents=True, exist_ok=True)
    with TaskLock(paths.root / "curate.lock"):
        for stale in paths.versions_dir.glob(".tmp-*"):  # a build that died half-way
            shutil.rmtree(stale, ignore_errors=True)
        return _build_version(task, paths, quiet=quiet, strict=strict)


def _build_version(task: TaskFolder, paths: TaskPaths, *, quiet: bool, strict: bool) -> dict:
    cfg = task.config
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    Screener(task)  # bad schema / regex fail here, before any work
    index = build_eval_index(task) if cfg.decontam.enabled else decontam.EvalIndex(n=cfg.decontam.ngram)

    records, rejected = read_generated(paths.generated_jsonl, strict=strict, quiet=quiet)
    timings["read"] = time.perf_counter() - t_start
    content_free = list(read_generated(paths.content_free_jsonl, strict=strict, quiet=True)[0]) \
        if paths.content_free_jsonl.exists() else []
    calibration = teacher_calibration(task, records, content_free)
    screener = Screener(task, calibration["weights"] if calibration else None)

    t = time.perf_counter()
    kept: list[tuple[Record, Any]] = []
    repairs: Counter = Counter()
    for record in records:
        verdict = screener.screen(record)
        if verdict.reason:
            rejected.append(rejected_row(record, verdict.reason, verdict.detail))
        else:
            kept.append((record, verdict))
            if verdict.repair:
                repairs[verdict.repair] += 1
    timings["parse_filter"] = time.perf_counter() - t

    t = time.perf_counter()
    dcfg, fields, near = cfg.dedupe, dedupe_fields(task), near_dedupe(task)
    if dcfg.enabled and kept and fields and dcfg.compare != "output":
        first = kept[0][0]
        if not any(isinstance(first.inputs.get(f), str) for f in fields):
            raise ConfigError(
                f"dedupe.fields {fields}: record {first.id} has no such text field (inputs: {sorted(first.inputs)}); "
                "fix dedupe.fields"
            )
    if dcfg.enabled and kept:
        result = dedupe(
            [compare_text(r, dcfg.compare, fields) for r, _ in kept], [v.confidence for _, v in kept],
            exact=dcfg.exact, near=near, threshold=dcfg.threshold, shingle_size=dcfg.shingle_size,
            num_perm=dcfg.num_perm, num_bands=dcfg.num_bands, min_words=dcfg.min_words,
        )
        for i, reason in sorted(result.reason.items()):
            record = kept[i][0]
            rejected.append(rejected_row(record, reason, f"duplicate of {kept[result.kept_by[i]][0].id}",
                                         duplicate_of=kept[result.kept_by[i]][0].id))
        kept = [kept[i] for i in result.kept]
    timings["dedupe"] = time.perf_counter() - t

    t = time.perf_counter()
    if cfg.decontam.enabled:
        clean = []
        for record, verdict in kept:
            hit = contamination(record, index)
            if hit:
                rejected.append(rejected_row(record, "contaminated", f"shares {hit[1]!r} with {hit[0]}", source=hit[0]))
            else:
                clean.append((record, verdict))
        kept = clean
    timings["decontam"] = time.perf_counter() - t

    t = time.perf_counter()
    groups = split_groups(task, [r for r, _ in kept], near)
    splits = build.assign_split(
        [r.id for r, _ in kept],
        [v.label if cfg.split.stratify else None for _, v in kept],
        cfg.split.eval_fraction, cfg.split.seed, groups,
    )
    rows = {"train": [], "eval": []}
    for (record, verdict), split in zip(kept, splits):
        row = build.to_train_row(record, verdict.completion, verdict.span, verdict.label)
        rows[split].append(row.model_dump(mode="json"))

    paths.versions_dir.mkdir(parents=True, exist_ok=True)
    version = build.new_version_name(paths.versions_dir)
    tmp = paths.versions_dir / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_jsonl(tmp / "train.jsonl", rows["train"])
    write_jsonl(tmp / "eval.jsonl", rows["eval"])
    write_jsonl(tmp / "rejected.jsonl", rejected)
    build.save_dataset_dict(tmp / "dataset", rows["train"], rows["eval"])

    inputs = {str(paths.generated_jsonl): file_sha256(paths.generated_jsonl)}
    if cfg.decontam.enabled:
        inputs |= {f: h for f, h in source_hashes(cfg.eval.source, task.path).items() if Path(f).is_file()}
        for extra in cfg.decontam.extra_files:
            inputs[str(task.file(extra))] = file_sha256(task.file(extra))
    reasons = Counter(r["reason"] for r in rejected)
    manifest = {
        "stage": "curate",
        "task": task.name,
        "description": cfg.description,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": str(paths.generated_jsonl),
        "config": {k: getattr(cfg, k).model_dump(mode="json") for k in ("output", "filters", "dedupe", "decontam", "split")},
        "inputs": inputs,
        "params": {"strict": strict},
        "calibration": calibration,
        "counts": {
            "read": len(records) + reasons.get("corrupt_line", 0),
            "corrupt_lines": reasons.get("corrupt_line", 0),
            "rejected_total": len(rejected),
            "rejected": dict(sorted(reasons.items())),
            "kept": len(kept),
            "train": len(rows["train"]),
            "eval": len(rows["eval"]),
            # near duplicates kept (split_groups): each on its representative's side of the split
            "split_with_their_near_duplicate": None if groups is None else sum(g != i for i, g in enumerate(groups)),
        },
        "label_distribution": {s: build.label_distribution(rows[s]) for s in rows} if cfg.output.kind == "label" else None,
        "soft_label_kinds": dict(Counter(r.soft_label_kind for r, _ in kept if r.soft_label_kind)),
        "soft_label_sources": dict(Counter(v.soft_source for _, v in kept if v.soft_source)),
        "soft_label_gaps": soft_label_gaps([v for _, v in kept]) if cfg.output.kind == "label" else None,
        "json_repairs": dict(repairs),
        "dedupe": {**dcfg.model_dump(mode="json"), "near": near, "bands": dcfg.num_bands or lsh_bands(dcfg.threshold, dcfg.num_perm)[0]},
        "decontam": {"enabled": cfg.decontam.enabled, "ngram": cfg.decontam.ngram, "sources": index.texts_per_source},
        "teachers": build.teachers_of([r for r, _ in kept]),
        "teacher_spend": build.teacher_spend(records),
        "template_hashes": task.template_hashes(),
        "timings": timings,
        "warnings": [],
    }
    if rejected_corrupt := reasons.get("corrupt_line", 0):
        warn(f"{rejected_corrupt} corrupt line(s) in {paths.generated_jsonl} skipped (see rejected.jsonl); "
             "--strict stops on the first", manifest["warnings"], quiet)
    warn((calibration or {}).get("fallback"), manifest["warnings"], quiet)
    warn(soft_label_warning(manifest["soft_label_gaps"]) if manifest["soft_label_gaps"] else None,
         manifest["warnings"], quiet)
    (tmp / "README.md").write_text(build.dataset_card(manifest), encoding="utf-8")
    timings["build"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.rename(paths.versions_dir / version)
    if not kept:  # keep the version for inspection, but do not point training at an empty dataset
        raise InputDataError(
            f"{paths.generated_jsonl}: all {len(records)} records were rejected {dict(reasons)}; see "
            f"{paths.versions_dir / version / 'rejected.jsonl'}, fix the task (labels, filters) and rerun"
        )
    pointer_tmp = paths.latest_pointer.with_suffix(".tmp")
    pointer_tmp.write_text(version + "\n", encoding="utf-8")
    pointer_tmp.replace(paths.latest_pointer)
    if not quiet:
        c = manifest["counts"]
        print(f"curate: {c['read']} read, {c['rejected_total']} rejected {dict(reasons)}, "
              f"{c['train']} train + {c['eval']} eval -> {paths.versions_dir / version}")
    return manifest


def add_arguments(parser) -> None:
    import argparse

    parser.add_argument("task", help="task folder (prompts/<task>) or its name")
    parser.add_argument(
        "--strict", action=argparse.BooleanOptionalAction, default=False,
        help="stop at the first corrupt line of generated.jsonl (default: report it, skip it, keep going)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def main(args) -> int:
    run_curate(load_task(args.task), quiet=args.quiet, strict=args.strict)
    return 0
