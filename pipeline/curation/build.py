"""Build a dataset version: a deterministic split, TrainRows, a DatasetDict, and the dataset card.

The split is by hash: each record's place is SHA-256(split.seed, record id), so the same records
always give the same split, byte for byte, on any machine. With a label, each label is split on
its own (the first round(eval_fraction * n) records by hash go to eval), so both splits keep the
label distribution. Given groups (near duplicates of the user's own inputs, which curate keeps), a
group's members take its first member's place, so no near copy of a training row is held out.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.records import Message, Record, TokenPosition, TrainRow


def split_key(record_id: str, seed: str) -> str:
    return hashlib.sha256(f"{seed}\x00{record_id}".encode()).hexdigest()


def assign_split(ids: list[str], strata: list[str | None], eval_fraction: float, seed: str,
                 groups: list[int] | None = None) -> list[str]:
    """'train' or 'eval' for each id, in order. ``groups[i]`` is the index of record i's group
    representative (itself when alone): every member sorts at its representative's place and ends on
    its representative's side, so a near duplicate is never split from it."""
    rep = groups or list(range(len(ids)))
    by_stratum: dict[str | None, list[int]] = {}
    for i, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(i)
    out = ["train"] * len(ids)
    for members in by_stratum.values():
        members.sort(key=lambda i: (split_key(ids[rep[i]], seed), split_key(ids[i], seed)))
        for i in members[: int(eval_fraction * len(members) + 0.5)]:
            out[i] = "eval"
    return [out[rep[i]] for i in range(len(ids))]


def tokens_within(positions: list[TokenPosition] | None, text: str, span: tuple[int, int] | None):
    """The token positions covering ``text[span]``, when the tokens spell ``text`` exactly (so a
    stripped code fence or a leading space does not leave stray tokens); otherwise all of them."""
    if not positions or span is None or "".join(p.token for p in positions) != text:
        return positions
    out, at = [], 0
    for p in positions:
        end = at + len(p.token)
        if end > span[0] and at < span[1]:
            out.append(p)
        at = end
    return out


def to_train_row(record: Record, completion: str, span: tuple[int, int] | None, label: str | None) -> TrainRow:
    # model_construct: every part comes from a validated Record; re-validating nested messages and
    # logprobs took most of the build time at 10k rows.
    return TrainRow.model_construct(
        id=record.id,
        prompt=record.messages,
        completion=[Message(role="assistant", content=completion)],
        label=label,
        soft_label=record.soft_label,
        soft_label_kind=record.soft_label_kind,
        token_logprobs=tokens_within(record.logprobs, record.completion, span),
        teacher_model=record.teacher.model,
        teacher_backend=record.teacher.backend,
    )


def new_version_name(versions_dir: Path, now: datetime | None = None) -> str:
    """UTC timestamp YYYYmmddTHHMMSSZ; a second build in the same second gets a -2, -3... suffix."""
    base = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    name, k = base, 1
    while (versions_dir / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def save_dataset_dict(folder: Path, train_rows: list[dict], eval_rows: list[dict]) -> None:
    """A datasets.DatasetDict (splits 'train' and 'eval') saved with save_to_disk. Both splits are
    slices of one Arrow table, so they share one schema even when a split is empty."""
    import datasets
    import pyarrow as pa
    from datasets import Dataset, DatasetDict

    rows = train_rows + eval_rows
    if not rows:  # nothing to save; the stage reports an all-rejected build as an error
        return
    table = pa.Table.from_pylist(rows)
    train = Dataset(table.slice(0, len(train_rows)))
    evals = Dataset(table.slice(len(train_rows)))
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a progress bar per split is noise next to the stage's summary
    try:
        dd = DatasetDict({"train": train, "eval": evals})
        # An empty split saved with the default sharding gets 0 shards, and load_from_disk then fails
        # (datasets 5.2), so each split gets at least one shard of at most ~500 MB.
        shards = {name: max(1, math.ceil(ds.data.nbytes / 500e6)) for name, ds in dd.items()}
        dd.save_to_disk(str(folder), num_shards=shards)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# The Hub's dataset-card metadata: `load_dataset(<version folder>)` finds both splits from it.
_CARD_FRONT_MATTER = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: train.jsonl
  - split: eval
    path: eval.jsonl
---"""


def dataset_card(manifest: dict[str, Any]) -> str:
    """The README.md of a version: what went in, what was dropped and why, and what came out."""
    counts = manifest["counts"]
    task = manifest["task"]
    parts = [_CARD_FRONT_MATTER, f"# {task} — dataset version {manifest['version']}", ""]
    if manifest.get("description"):
        parts += [manifest["description"], ""]
    parts += [
        f"Built by `distill curate` from `{manifest['source']}` at {manifest['created_at']}.",
        ("Rows are in TRL's conversational prompt-completion form (`prompt`, `completion`); side columns: "
         "`label`, `soft_label`, `soft_label_kind`, `token_logprobs`, `teacher_model`, `teacher_backend`."),
        "Load with `datasets.load_from_disk('<this folder>/dataset')` or `datasets.load_dataset('<this folder>')`.",
        "",
        "## Counts",
        "",
        _table(
            [("records read", counts["read"]), ("corrupt lines", counts["corrupt_lines"]),
             ("rejected", counts["rejected_total"]), ("kept", counts["kept"]),
             ("train", counts["train"]), ("eval", counts["eval"])],
            ("", "records"),
        ),
        "",
    ]
    dist = manifest.get("label_distribution")
    if dist:
        labels = sorted(set(dist["train"]) | set(dist["eval"]))
        parts += ["## Label distribution", "",
                  _table([(lab, dist["train"].get(lab, 0), dist["eval"].get(lab, 0)) for lab in labels],
                         ("label", "train", "eval")), ""]
        src = manifest.get("soft_label_sources", {})
        parts += [(f"Soft labels: {src.get('logprobs', 0)} from teacher logprobs; one-hot for "
                   f"{src.get('no_logprobs', 0)} without logprobs and {src.get('no_label_in_top_k', 0)} "
                   "whose first tokens' top-k named no label."), ""]
    rejected = counts["rejected"]
    parts += ["## Dropped examples", "", "Every dropped record is in `rejected.jsonl` with its reason.", ""]
    parts += [_table(sorted(rejected.items()), ("reason", "records")) if rejected else "None.", ""]
    dd = manifest["dedupe"]
    near = dd["near"]
    if not near and manifest.get("config", {}).get("dedupe", {}).get("near") is None:
        near = "off for the task's own inputs (set dedupe.near: true to remove their near duplicates)"
    parts += ["## Dedupe", "",
              (f"Compared: {dd['compare']}; exact: {dd['exact']}; near: {near} (MinHash LSH, "
               f"threshold {dd['threshold']}, {dd['shingle_size']}-word shingles, {dd['num_perm']} permutations, "
               f"{dd['bands']} bands). Removed {rejected.get('exact_duplicate', 0)} exact and "
               f"{rejected.get('near_duplicate', 0)} near duplicates, each for a kept, at least as confident record it duplicates."
               + ("" if not counts.get("split_with_their_near_duplicate") else
                  f" {counts['split_with_their_near_duplicate']} kept near duplicates are on the same side of the "
                  "train/eval split as the record they resemble.")),
              ""]
    dc = manifest["decontam"]
    sources = ", ".join(f"{k} ({v} texts)" for k, v in dc["sources"].items()) or "none"
    parts += ["## Decontamination", "",
              f"{dc['ngram']}-word n-gram overlap against: {sources}. Removed {rejected.get('contaminated', 0)}.", ""]
    teachers = manifest["teachers"]
    spend = manifest["teacher_spend"]
    cost = "unknown (no price for this model)" if spend["cost_usd"] is None else f"${spend['cost_usd']:.4f}"
    parts += ["## Teacher", "",
              (f"{spend['records']} answers, {spend['prompt_tokens']} prompt + {spend['completion_tokens']} completion "
               f"tokens, cost {cost} ({spend['cached']} served from the cache)."), "", _table([(t["backend"], t["model"], json.dumps(t["params"], sort_keys=True),
                                        t["top_logprobs"], t["records"]) for t in teachers],
                                       ("backend", "model", "params", "top_logprobs", "records")), ""]
    parts += ["## Templates (SHA-256, first 16 hex digits)", "",
              _table(sorted(manifest["template_hashes"].items()), ("file", "sha256")), ""]
    return "\n".join(parts)


def teachers_of(records: list[Record]) -> list[dict[str, Any]]:
    """Each distinct teacher (backend, model, exact params) and how many kept records it answered."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in records:
        key = (r.teacher.backend, r.teacher.model, json.dumps(r.teacher.params, sort_keys=True))
        entry = out.setdefault(key, {**r.teacher.model_dump(mode="json"), "records": 0})
        entry["records"] += 1
    return list(out.values())


def teacher_spend(records: list[Record]) -> dict[str, Any]:
    return {
        "records": len(records),
        "prompt_tokens": sum(r.usage.prompt_tokens for r in records),
        "completion_tokens": sum(r.usage.completion_tokens for r in records),
        # None when any answer's price is unknown: a partial sum would understate the spend
        "cost_usd": None if any(r.cost_usd is None for r in records) else round(sum(r.cost_usd for r in records), 6),
        "cached": sum(r.cached for r in records),
    }


def label_distribution(rows: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["label"] for r in rows if r.get("label") is not None).items()))
