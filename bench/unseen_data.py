"""The README's defaults on labelled data this project was not built on, run as a new user runs them.

    .venv/bin/python bench/unseen_data.py [--sets tweets,amazon,nyt]

The data: the ground truth that ships with VADER (Hutto & Gilbert, ICWSM 2014; MIT licence, in the
PyPI sdist vaderSentiment==3.3.2, fetched once with pip into data/external/vader/, git-ignored):
4,200 tweets, 3,708 Amazon review snippets and 5,190 New York Times editorial snippets, each with
the mean of about 20 people's ratings from -4 to +4. The gold label is the rating's sign (positive
or negative); texts rated exactly 0 are dropped. `tweets3` is the tweets with three labels
(negative, neutral, positive; neutral within 0.5 of 0), the task's `output.labels` set to those.
No file has a group column.

Each set becomes a task the way the README's "Your task is a folder" says: a copy of prompts/sentiment
whose inputs.source and eval.source point at the set's CSV, split by row (group_split field: text,
the demo's holdout fraction and transfer sample), and whose user.j2 question names the set's kind of
text. Nothing else changes: the demo's teacher, labels, calibration, student, head, learning rate and
early stopping. Then `distill run <folder>` as a subprocess, as a user types it, into
bench/results/unseen/ (a rerun reads the teacher's answers from that cache), and the figures of each
report.json.

Targets, per set (issue 10's done-when): agreement with the teacher >= 85%, gap closed >= 90%,
student >= 4x cheaper. Prints a table, then ONE JSON line with every figure and a `targets_met` map.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VADER = REPO / "data" / "external" / "vader"
SDIST = "vaderSentiment==3.3.2"
SETS = {  # name: (ground-truth file in the sdist's additional resources, the question's noun)
    "tweets": ("tweets_GroundTruth.txt", "tweet"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "product review"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "newspaper editorial"),
    "tweets3": ("tweets_GroundTruth.txt", "tweet"),  # three labels: a mean rating within +-0.5 is neutral
}
THREE_LABELS = ["negative", "neutral", "positive"]
NEUTRAL_WITHIN = 0.5


def fetch_vader() -> None:
    """The ground-truth files from VADER's sdist (downloaded with pip, never installed)."""
    if all((VADER / f).exists() for f, _ in SETS.values()):
        return
    VADER.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST,
                        "-d", tmp], check=True)
        with tarfile.open(next(Path(tmp).glob("vaderSentiment-*.tar.gz"))) as outer:
            inner = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            with tarfile.open(fileobj=outer.extractfile(inner)) as tar:
                for member in tar.getmembers():
                    name = Path(member.name).name
                    if name in {f for f, _ in SETS.values()}:
                        (VADER / name).write_bytes(tar.extractfile(member).read())


def gold_rows(name: str) -> list[tuple[str, str]]:
    """(text, label) per line of ``id <TAB> mean rating <TAB> text``; the label is the rating's sign
    (rated 0: dropped), or for ``tweets3`` neutral within +-NEUTRAL_WITHIN of 0."""
    three = name == "tweets3"
    rows = []
    with open(VADER / SETS[name][0], encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[2].strip() or (float(parts[1]) == 0 and not three):
                continue
            rating = float(parts[1])
            label = "neutral" if three and abs(rating) <= NEUTRAL_WITHIN else "positive" if rating > 0 else "negative"
            rows.append(("\t".join(parts[2:]).strip(), label))
    return rows


def demo_copy(out: Path, name: str) -> tuple[Path, dict]:
    """prompts/sentiment copied to ``out``/tasks/``name`` as the README says to begin, and its task.yaml
    read (with its name set), for the caller to point at its data and write back with save_config."""
    from pipeline import yaml_io

    folder = out / "tasks" / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(REPO / "prompts" / "sentiment", folder)
    cfg = yaml_io.load((folder / "task.yaml").read_text())
    cfg["name"] = name
    return folder, cfg


def save_config(folder: Path, cfg: dict) -> Path:
    import yaml

    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return folder


def build_task(name: str, out: Path, rows: list[tuple[str, str]] | None = None) -> Path:
    """prompts/sentiment copied, its sources pointed at the set (``rows``: gold_rows(name), when read
    already), its question reworded."""
    folder, cfg = demo_copy(out, name)
    with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(gold_rows(name) if rows is None else rows)
    demo_split = cfg["inputs"]["source"]["group_split"]
    by_row = {"field": "text", "holdout_fraction": demo_split["holdout_fraction"]}
    cfg["inputs"]["source"] = {"path": f"{name}.csv", "fields": {"text": "text"},
                               "group_split": {**by_row, "keep": "rest"}, "sample": cfg["inputs"]["source"]["sample"]}
    cfg["eval"]["source"] = {"path": f"{name}.csv", "fields": {"text": "text", "gold": "label"},
                             "group_split": {**by_row, "keep": "holdout"}}
    cfg["eval"].pop("gold_map", None)
    if name == "tweets3":
        cfg["output"]["labels"] = THREE_LABELS
    save_config(folder, cfg)
    noun = SETS[name][1]
    (folder / "user.j2").write_text(
        (REPO / "prompts" / "sentiment" / "user.j2").read_text().replace("Review:", f"{noun.capitalize()}:")
        .replace("this review", f"this {noun}"), encoding="utf-8")
    return folder


def run_set(name: str, out: Path) -> dict:
    rows = gold_rows(name)
    return run_task(build_task(name, out, rows), name, out, len(rows))


def run_task(folder: Path, name: str, out: Path, rows: int) -> dict:
    """``distill run <folder> --quiet`` as a user types it (data and models under ``out``), and the
    figures of its report.json; ``rows``: the set's size, for the table."""
    env = {**os.environ, "DISTILL_DATA_DIR": str(out / "data"), "DISTILL_MODELS_DIR": str(out / "models")}
    distill = Path(sys.executable).parent / "distill"
    t = time.perf_counter()
    proc = subprocess.run([str(distill), "run", str(folder), "--quiet"], check=False, env=env, capture_output=True,
                          text=True)
    wall = round(time.perf_counter() - t, 1)
    if proc.returncode not in (0, 10):
        raise SystemExit(f"{name}: distill run failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    model = json.loads(proc.stdout.strip().splitlines()[-1])["model"]  # --quiet's summary line
    report = json.loads((out / "models" / name / model / "report.json").read_text())
    head, summary = report["headline"], report["summary"]
    used = report.get("calibration_fallback") or {}
    return {"rows": rows, "model": model, "run_s": wall, "exit": proc.returncode,
            "evaluated": report["counts"]["with_gold"], "majority_baseline": head["majority_baseline"],
            "teacher_accuracy": head["teacher"], "student_accuracy": head["student"],
            "agreement": head["agreement"], "kappa": round(head["kappa"], 3),
            "gap_closed": None if head.get("gap_closed") is None else round(head["gap_closed"], 3),
            "verdict": head["verdict"], "cost_ratio": round(summary["cost_ratio"], 2),
            "teacher_calibration": report.get("teacher_calibration", {}).get("accuracy"),
            "calibration_used": used.get("method") or report.get("teacher_calibration", {}).get("configured")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="tweets,amazon,nyt,tweets3", help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "unseen"))
    args = p.parse_args(argv)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        p.error(f"--sets: unknown {', '.join(unknown)}; choose from {', '.join(SETS)}")
    fetch_vader()
    out = Path(args.out)
    results = {name: run_set(name, out) for name in names}
    print(f"{'set':8} {'rows':>5} {'majority':>8} {'teacher':>7} {'student':>7} {'agree':>6} {'kappa':>6} "
          f"{'gap':>6} {'cheaper':>7} {'run s':>6}")
    for name, r in results.items():
        gap = "n/a" if r["gap_closed"] is None else f"{r['gap_closed']:.1%}"
        print(f"{name:8} {r['rows']:5d} {r['majority_baseline']:8.1%} {r['teacher_accuracy']:7.1%} "
              f"{r['student_accuracy']:7.1%} {r['agreement']:6.1%} {r['kappa']:6.2f} {gap:>6} "
              f"{r['cost_ratio']:6.1f}x {r['run_s']:6.0f}  ({r['verdict']})")
    targets = {f"{name}_{key}": ok for name, r in results.items() for key, ok in (
        ("agreement_85pct", r["agreement"] >= 0.85),
        ("gap_closed_90pct", r["gap_closed"] is not None and r["gap_closed"] >= 0.9),
        ("4x_cheaper", r["cost_ratio"] >= 4))}
    print(json.dumps({"bench": "unseen_data", "source": SDIST, "sets": results, "targets_met": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
