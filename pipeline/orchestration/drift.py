"""Compare two dataset versions: what a scheduled regeneration changed.

Reads two ``data/<task>/versions/<v>/`` folders (train.jsonl, eval.jsonl, rejected.jsonl,
manifest.json) and reports counts, the shift in label distribution, the duplicate rate, rejection
reasons, and the examples that are new or dropped (by example id).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summarize_version(vdir: Path) -> dict[str, Any]:
    rows = _rows(vdir / "train.jsonl") + _rows(vdir / "eval.jsonl")
    rejected = _rows(vdir / "rejected.jsonl")
    manifest = json.loads((vdir / "manifest.json").read_text()) if (vdir / "manifest.json").exists() else {}
    counts = manifest.get("counts", {})
    labels = Counter(r["label"] for r in rows if r.get("label") is not None)
    # the share of the records read that dedupe dropped (curate's counts.rejected, by reason)
    dropped = counts.get("rejected") if isinstance(counts.get("rejected"), dict) else {}
    duplicates = sum(dropped.get(reason, 0) for reason in ("exact_duplicate", "near_duplicate"))
    considered = counts.get("read") or (len(rows) + len(rejected))
    return {
        "version": vdir.name,
        "examples": len(rows),
        "ids": {r["id"] for r in rows},
        "labels": dict(labels),
        "rejected": dict(Counter(r.get("reason", "unknown") for r in rejected)),
        "duplicate_rate": (duplicates / considered) if considered else 0.0,
    }


def _shares(counter: dict[str, int]) -> dict[str, float]:
    total = sum(counter.values())
    return {k: v / total for k, v in counter.items()} if total else {}


def compare_versions(prev_dir: Path | None, new_dir: Path, *, samples: int = 5) -> dict[str, Any]:
    """The drift report between two versions (``prev_dir`` None: the first version)."""
    new = summarize_version(new_dir)
    prev = summarize_version(prev_dir) if prev_dir is not None else None
    prev_ids = prev["ids"] if prev else set()
    added, dropped = sorted(new["ids"] - prev_ids), sorted(prev_ids - new["ids"])
    p_share, n_share = _shares(prev["labels"] if prev else {}), _shares(new["labels"])
    # a first version has nothing to shift from: no shift and no TVD, not the distance to an empty set
    label_shift = {lab: n_share.get(lab, 0.0) - p_share.get(lab, 0.0)
                   for lab in sorted(set(p_share) | set(n_share))} if prev else {}
    return {
        "previous": prev["version"] if prev else None,
        "current": new["version"],
        "examples": {"previous": prev["examples"] if prev else 0, "current": new["examples"]},
        "labels": {"previous": prev["labels"] if prev else {}, "current": new["labels"], "share_shift": label_shift},
        # total variation distance between the two label distributions (0 = same, 1 = disjoint)
        "label_tvd": 0.5 * sum(abs(v) for v in label_shift.values()) if prev else None,
        "duplicate_rate": {"previous": prev["duplicate_rate"] if prev else None, "current": new["duplicate_rate"]},
        "rejected": {"previous": prev["rejected"] if prev else {}, "current": new["rejected"]},
        "new_examples": len(added),
        "dropped_examples": len(dropped),
        "new_sample": added[:samples],
        "dropped_sample": dropped[:samples],
        "changed": bool(added or dropped) or prev is None,
    }


SHOWN_LABELS = 10  # a 77-intent task's distribution in full is a wall of text; drift.json keeps every label


def _counts_text(counts: dict[str, int]) -> str:
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {v}" for k, v in top[:SHOWN_LABELS]) or "(no labels)"
    return text + (f", and {len(top) - SHOWN_LABELS} more (drift.json)" if len(top) > SHOWN_LABELS else "")


def drift_markdown(report: dict[str, Any]) -> str:
    lab = report["labels"]
    lines = [
        f"# Drift: {report['previous'] or '(none)'} -> {report['current']}",
        "",
        (f"- examples: {report['examples']['previous']} -> {report['examples']['current']} "
         f"(+{report['new_examples']} new, -{report['dropped_examples']} dropped)"),
    ]
    if report["previous"] is None:
        lines += [f"- duplicate rate: {report['duplicate_rate']['current']:.3f}",
                  "- label distribution: " + _counts_text(lab["current"]) + " (the first version: no shift to report)"]
        return "\n".join(lines) + "\n"
    lines += [
        f"- duplicate rate: {report['duplicate_rate']['previous']:.3f} -> {report['duplicate_rate']['current']:.3f}",
        f"- label distribution shift (TVD): {report['label_tvd']:.3f}",
    ]
    shifts = sorted(lab["share_shift"].items(), key=lambda kv: -abs(kv[1]))
    for label, shift in shifts[:SHOWN_LABELS]:
        lines.append(f"  - {label}: {lab['previous'].get(label, 0)} -> {lab['current'].get(label, 0)} ({shift:+.1%} share)")
    if len(shifts) > SHOWN_LABELS:
        lines.append(f"  - and {len(shifts) - SHOWN_LABELS} more labels, shifted less (drift.json)")
    reasons = sorted(set(report["rejected"]["previous"]) | set(report["rejected"]["current"]))
    if reasons:
        lines.append("- rejections:")
        for r in reasons:
            lines.append(f"  - {r}: {report['rejected']['previous'].get(r, 0)} -> {report['rejected']['current'].get(r, 0)}")
    return "\n".join(lines) + "\n"
