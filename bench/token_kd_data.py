"""A greedy or a sampled teacher for the text task's training data: which student gets closer to it?

    .venv/bin/python bench/token_kd_data.py [--inputs 200] [--heldout 70] [--seeds 3] [--steps 30]

bench/token_kd.py scores each dataset on its own held-out split: with `--teacher-temperature 1.0`
that is the teacher's *sampled* answers, teacher-forced, so its figures cannot say whether a student
trained on samples is closer to the teacher than one trained on the greedy answers. Here the four
students (SFT and token-level KD, on greedy and on sampled answers to the same --inputs snippets,
token_kd's settings otherwise) are scored on ONE held-out set: the teacher's greedy answers to
--heldout further snippets that neither dataset holds (top-1 next-token agreement, teacher-forced,
as token_kd scores). The three datasets are built by the real stages in --out/{greedy,sampled,heldout};
the held-out one starts from the greedy one's answer cache, so no answer is bought twice.
Prints a table, then ONE JSON line with every figure and a `targets_met` map.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def unseen_rows(rows, seen_prompts: set[str]) -> list:
    """The rows whose user prompt is not among ``seen_prompts``."""
    return [r for r in rows if r.prompt[-1].content not in seen_prompts]


def seed_cache(source: Path, target: Path) -> None:
    """Start ``target`` (the held-out dataset's answer cache) from ``source`` (the greedy one's), so
    that the answers both datasets share are not asked twice; a rerun keeps the one it has, with the
    held-out answers it already paid for."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.exists() and not target.exists():
        shutil.copy(source, target)


def main(argv: list[str] | None = None) -> int:
    from bench import token_kd as tk
    from pipeline.paths import TaskPaths
    from pipeline.records import TrainRow, read_jsonl

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--heldout", type=int, default=70)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "token_kd_data"))
    args = ap.parse_args(argv)
    out = Path(args.out)

    def dataset(name: str, n: int, temperature: float | None):
        opt = tk.options(SimpleNamespace(token_out=str(out / name), token_inputs=n, token_steps=args.steps,
                                         token_teacher_temperature=temperature))
        task = tk.bench_task(opt, out / name)  # also points DISTILL_DATA_DIR / MODELS_DIR at out/name
        return opt, task, TaskPaths(task.name).versions_dir / tk.build_dataset(task)["version"]

    def rows(vdir: Path) -> list:
        return [r for f in ("train.jsonl", "eval.jsonl") for r in read_jsonl(vdir / f, TrainRow)]

    sets = {"greedy": dataset("greedy", args.inputs, None), "sampled": dataset("sampled", args.inputs, 1.0)}
    seed_cache(out / "greedy" / "data" / "review_summary" / "cache.sqlite",
               out / "heldout" / "data" / "review_summary" / "cache.sqlite")
    _, _, held_dir = dataset("heldout", args.inputs + args.heldout, None)
    seen = {r.prompt[-1].content for _, _, vdir in sets.values() for r in rows(vdir)}
    held = unseen_rows(rows(held_dir), seen)
    held_path = out / "common_heldout.jsonl"
    held_path.write_text("".join(r.model_dump_json() + "\n" for r in held), encoding="utf-8")

    scores: dict[str, list[float]] = {}
    positions = 0
    for seed in range(args.seeds):
        for data in ("greedy", "sampled") if seed % 2 == 0 else ("sampled", "greedy"):
            opt, task, _ = sets[data]
            tk.bench_task(opt, out / data)  # this dataset's folders again
            for method in ("sft", "kd"):
                run = tk.train_one(task, method, seed, opt)
                agreement, positions = tk.top1_agreement(Path(run["output_dir"]), held_path)
                scores.setdefault(f"{data}_{method}", []).append(round(agreement, 4))
                print(f"seed {seed} {data} {method}: top-1 agreement {agreement:.3f}", file=sys.stderr)
                shutil.rmtree(run["output_dir"], ignore_errors=True)
    summary = {k: {"mean": round(statistics.mean(v), 4), "sd": round(statistics.stdev(v) if len(v) > 1 else 0.0, 4),
                   "runs": v} for k, v in scores.items()}
    best_sampled = max(("sampled_sft", "sampled_kd"), key=lambda k: summary[k]["mean"])
    margin = summary[best_sampled]["mean"] - summary["greedy_sft"]["mean"]
    sd = max(summary[best_sampled]["sd"], summary["greedy_sft"]["sd"])
    print(f"top-1 agreement with the teacher's greedy answers to {len(held)} unseen snippets "
          f"({positions} positions; {args.seeds} seeds, {args.steps} steps, mean ± sd)")
    for k, v in summary.items():
        print(f"  {k:12s} {v['mean']:.3f} ± {v['sd']:.3f}")
    print(json.dumps({
        "bench": "token_kd_data", "settings": vars(args) | {"out": str(out)}, "heldout_rows": len(held),
        "heldout_positions": positions, "top1_on_greedy_heldout": summary,
        "targets_met": {"sampled_data_student_ahead_of_greedy_sft_by_2sd": bool(margin > 2 * sd)},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
