"""Token-level KD vs SFT on the text task (prompts/review_summary), same data, same steps, several seeds.

    .venv/bin/python bench/token_kd.py [--inputs 200] [--seeds 3] [--steps 30] [--batch-size 4]
        [--lr 3e-4] [--temperature 1] [--alpha 0.9] [--layer-map 0,10,20,29] [--teacher-temperature T]

Reads:  prompts/review_summary/ and N real Rotten Tomatoes snippets (data/external, `make setup`) as
        its inputs; the embedded SmolLM2-135M teacher answers them through run_generate +
        run_curate (the real stages) into the bench's own DISTILL_DATA_DIR, once: a rerun reads
        the teacher's answers from that folder's cache.
Writes: bench/results/token_kd/ (data, the trained students; students deleted after scoring
        unless --keep).
Prints: a table, then ONE JSON line with every figure and ``targets_met``.

Per seed, SFT and token-level KD train through `run_train` with identical SFTConfig overrides; the
order alternates by seed so a busy machine does not favour one method. Score: top1_agreement,
the student's next-token argmax == the teacher's top-1 on the held-out split (curate's eval rows),
teacher-forced on the teacher's own completions, over every completion position whose teacher
logprobs re-tokenize to the completion. The untrained student is scored too, as the floor.
Target: KD's mean ahead of SFT's by more than 2 sd (the larger of the two methods' sd).
--teacher-temperature: the teacher samples its answers at T instead of the task's greedy decoding
(teacher.params.temperature; the answers are then new requests, cached apart). Its logprobs stay
the raw T=1 ones (docs/local-teachers.md), and the score still counts the teacher's top-1, which a
sampled answer often did not write.
``run_token_part(args)`` is what bench/kd_vs_sft.py imports; args may be any object, missing
attributes take DEFAULTS.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import json
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
RT_CORPUS = REPO / "data" / "external" / "rotten_tomatoes_corpus.csv.bz2"
DEFAULTS = {
    "token_inputs": 200, "token_seeds": 3, "token_steps": 30, "token_batch_size": 4, "token_lr": 3e-4,
    "token_temperature": 1.0, "token_alpha": 0.9, "token_layer_map": "0,10,20,29", "token_eval_fraction": 0.2,
    "token_out": str(REPO / "bench" / "results" / "token_kd"), "keep": False, "token_teacher_temperature": None,
}


def options(args) -> SimpleNamespace:
    return SimpleNamespace(**{k: getattr(args, k, v) for k, v in DEFAULTS.items()})


def rt_snippets(n: int, seed: int = 0) -> list[str]:
    """N short real review snippets (fresh or rotten, under 300 characters), a seeded sample."""
    if not RT_CORPUS.exists():
        raise SystemExit(f"{RT_CORPUS}: not found; run `make setup` (scripts/fetch_data.py) first")
    with bz2.open(RT_CORPUS, "rt", encoding="utf-8") as fh:
        texts = sorted({r["text"].strip() for r in csv.DictReader(fh)
                        if r["category"] in ("fresh", "rotten") and 20 <= len(r["text"].strip()) < 300})
    random.Random(seed).shuffle(texts)
    return texts[:n]


def bench_task(opt: SimpleNamespace, out: Path):
    """A copy of prompts/review_summary whose inputs are the snippets, with its own data folders."""
    import yaml

    from pipeline import yaml_io
    from pipeline.config.task import load_task

    folder = out / "task" / "review_summary"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(REPO / "prompts" / "review_summary", folder)
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rt_snippets(opt.token_inputs)),
                                         encoding="utf-8")
    cfg = yaml_io.load((folder / "task.yaml").read_text())
    cfg["split"]["eval_fraction"] = opt.token_eval_fraction
    cfg["student"]["layer_map"] = [int(x) for x in str(opt.token_layer_map).split(",")]
    if opt.token_teacher_temperature is not None:
        cfg["teacher"]["params"]["temperature"] = opt.token_teacher_temperature
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    os.environ["DISTILL_DATA_DIR"] = str(out / "data")
    os.environ["DISTILL_MODELS_DIR"] = str(out / "models")
    return load_task(folder)


def build_dataset(task) -> dict:
    """Generate (cached after the first run) and curate; returns the curate manifest."""
    from pipeline.stages.curate import run_curate
    from pipeline.stages.generate import run_generate

    t = time.perf_counter()
    gen = run_generate(task, quiet=True)
    cur = run_curate(task, quiet=True)
    cur["generate_s"] = round(time.perf_counter() - t, 1)
    cur["generate_new_answers"] = gen["counts"].get("requests_sent", 0)
    return cur


def top1_agreement(model_dir: Path, heldout_path: Path) -> tuple[float, int]:
    """Share of held-out completion positions where the student's argmax is the teacher's top-1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import encode_rows, read_train_rows

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = encode_rows(read_train_rows(heldout_path), tok, kd_level="token", labels=None, max_length=None)
    hits = total = 0
    with torch.inference_mode():
        for item in enc.rows:
            if not item["kd_pos"]:
                continue
            logits = model(input_ids=torch.tensor([item["input_ids"]])).logits[0]
            pred = logits[[p - 1 for p in item["kd_pos"]]].argmax(-1).tolist()
            # kd_ids lists the teacher's top-k most likely first, then the sampled token
            hits += sum(int(a == ids[0]) for a, ids in zip(pred, item["kd_ids"]))
            total += len(pred)
    return hits / max(total, 1), total


def untrained_student(task, out: Path) -> Path:
    from transformers import AutoTokenizer

    from pipeline.training.student_init import build_student

    model, tokenizer_dir, _ = build_student(task.config.student)
    folder = out / "models" / "untrained"
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


def train_one(task, method: str, seed: int, opt: SimpleNamespace) -> dict:
    from pipeline.stages.train import run_train

    overrides = {"max_steps": opt.token_steps, "per_device_train_batch_size": opt.token_batch_size,
                 "learning_rate": opt.token_lr, "seed": seed, "data_seed": seed, "save_strategy": "no",
                 "logging_steps": max(opt.token_steps // 5, 1), "num_train_epochs": 100}
    t = time.perf_counter()
    m = run_train(task, quiet=True, evaluate=False, method=method, overrides=overrides,
                  temperature=opt.token_temperature,
                  alpha=opt.token_alpha, kd_level="token" if method == "kd" else None)
    return {"output_dir": m["output_dir"], "train_s": round(time.perf_counter() - t, 1), "kd_level": m.get("kd_level"),
            "kd_positions": m.get("counts", {}).get("train", {}).get("kd_positions")}


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_token_part(args) -> dict:
    """Train SFT and token-level KD students per seed on the same data and steps; score each."""
    opt = options(args)
    out = Path(opt.token_out)
    out.mkdir(parents=True, exist_ok=True)
    task = bench_task(opt, out)
    from pipeline.paths import TaskPaths

    curated = build_dataset(task)
    heldout = TaskPaths(task.name).versions_dir / curated["version"] / "eval.jsonl"
    floor, n_positions = top1_agreement(untrained_student(task, out), heldout)
    runs: dict[str, list[dict]] = {"sft": [], "kd": []}
    for seed in range(opt.token_seeds):
        for method in (("sft", "kd") if seed % 2 == 0 else ("kd", "sft")):
            run = train_one(task, method, seed, opt)
            run["top1_agreement"], _ = top1_agreement(Path(run["output_dir"]), heldout)
            run["seed"] = seed
            runs[method].append(run)
            print(f"seed {seed} {method}: top-1 agreement {run['top1_agreement']:.3f} ({run['train_s']} s)",
                  file=sys.stderr)
            if not opt.keep:
                shutil.rmtree(run["output_dir"], ignore_errors=True)
    sft_m, sft_sd = mean_sd([r["top1_agreement"] for r in runs["sft"]])
    kd_m, kd_sd = mean_sd([r["top1_agreement"] for r in runs["kd"]])
    margin = kd_m - sft_m
    return {
        "bench": "token_kd", "task": "review_summary",
        "settings": {k: getattr(opt, k) for k in DEFAULTS if k != "token_out"},
        "data": {"version": curated["version"], "train_rows": curated["counts"]["train"],
                 "heldout_rows": curated["counts"]["eval"], "rejected": curated["counts"]["rejected"],
                 "heldout_positions": n_positions, "generate_s": curated["generate_s"],
                 "generate_new_answers": curated["generate_new_answers"]},
        "top1_agreement": {"untrained": round(floor, 4),
                           "sft": {"mean": round(sft_m, 4), "sd": round(sft_sd, 4)},
                           "kd": {"mean": round(kd_m, 4), "sd": round(kd_sd, 4)}},
        "kd_minus_sft": round(margin, 4),
        "runs": runs,
        "targets_met": {"token_kd_ahead_of_sft_by_2sd": bool(margin > 2 * max(sft_sd, kd_sd))},
    }


def print_table(res: dict) -> None:
    a = res["top1_agreement"]
    print(f"token-level KD vs SFT on review_summary ({res['data']['train_rows']} train rows, "
          f"{res['data']['heldout_rows']} held out, {res['data']['heldout_positions']} positions; "
          f"{len(res['runs']['sft'])} seeds, mean ± sd)")
    print(f"{'':28s}{'untrained':>12s}{'SFT':>18s}{'KD':>18s}")
    print(f"{'top-1 agreement, held out':28s}{a['untrained']:>12.3f}"
          f"{a['sft']['mean']:>11.3f} ± {a['sft']['sd']:.3f}{a['kd']['mean']:>11.3f} ± {a['kd']['sd']:.3f}")
    t = {m: statistics.mean(r["train_s"] for r in res["runs"][m]) for m in ("sft", "kd")}
    print(f"{'train time per run (s)':28s}{'':>12s}{t['sft']:>18.1f}{t['kd']:>18.1f}")
    print(f"KD - SFT = {res['kd_minus_sft']:+.3f}; target (> 2 sd): {res['targets_met']['token_kd_ahead_of_sft_by_2sd']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", dest="token_inputs", type=int, default=DEFAULTS["token_inputs"])
    p.add_argument("--seeds", dest="token_seeds", type=int, default=DEFAULTS["token_seeds"])
    p.add_argument("--steps", dest="token_steps", type=int, default=DEFAULTS["token_steps"])
    p.add_argument("--batch-size", dest="token_batch_size", type=int, default=DEFAULTS["token_batch_size"])
    p.add_argument("--lr", dest="token_lr", type=float, default=DEFAULTS["token_lr"])
    p.add_argument("--temperature", dest="token_temperature", type=float, default=DEFAULTS["token_temperature"])
    p.add_argument("--alpha", dest="token_alpha", type=float, default=DEFAULTS["token_alpha"])
    p.add_argument("--layer-map", dest="token_layer_map", default=DEFAULTS["token_layer_map"])
    p.add_argument("--eval-fraction", dest="token_eval_fraction", type=float, default=DEFAULTS["token_eval_fraction"])
    p.add_argument("--teacher-temperature", dest="token_teacher_temperature", type=float, default=None,
                   help="sample the teacher's answers at this temperature (default: the task's, greedy)")
    p.add_argument("--out", dest="token_out", default=DEFAULTS["token_out"])
    p.add_argument("--keep", action="store_true", help="keep the trained students")
    res = run_token_part(p.parse_args(argv))
    print_table(res)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
