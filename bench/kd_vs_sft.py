"""Hard-label SFT vs soft-label KD on the demo task, same data, same steps, several seeds.

    .venv/bin/python bench/kd_vs_sft.py [--task prompts/sentiment] [--seeds 3] [--steps 30]
        [--batch-size 8] [--lr 1e-4] [--temperature 2] [--alpha 0.5] [--eval-limit 200]

Reads:  prompts/<task>/ and its latest dataset version (built first with run_generate + run_curate
        when none exists: the embedded SmolLM2 teacher, no network), eval.source (Rotten Tomatoes
        snippets, `scripts/fetch_data.py`).
Writes: bench/results/kd_vs_sft/ (the trained students, deleted after scoring unless --keep).
Prints: a table, then ONE JSON line with every figure.

Per seed, both methods train through `run_train` (the real stage) with identical SFTConfig
overrides; the order alternates by seed so a busy machine does not favour one method. Figures:
  agreement_heldout  student label == the teacher's label on the dataset's eval split
  agreement_real     student label == the teacher's label on the real inputs
  accuracy_real      student label == gold on the real inputs (fresh -> positive, rotten -> negative)
  auc_real           ROC AUC of the student's log-odds between the first two labels, against gold
  margin_corr_real   Pearson correlation of the student's and the teacher's log-odds (soft agreement)
  tokens_per_s       training tokens (prompt + answer) / train_runtime; kd_speed_ratio = KD / SFT
Labels are read by scoring each label string as the whole answer (constrained decoding), the same
rule for teacher and students. Target: KD costs at most 15% more than SFT (kd_speed_ratio >= 0.87).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.task import load_task
from pipeline.paths import TaskPaths


def rt_inputs_task(task, n: int, out: Path, eval_texts: list[str], eval_gold: list[str]):
    """A copy of the task whose inputs are N real Rotten Tomatoes snippets (none of them in the
    evaluation sample) instead of teacher-written reviews, with its own data folder. Writing
    inputs is most of the demo's generate time on a CPU; labelling them is quick. Its eval source
    is the evaluation sample itself, so curate's decontamination removes exactly those inputs."""
    import shutil as sh

    import yaml

    from pipeline.config.task import load_task as load
    from pipeline.evaluation.eval_inputs import read_eval_source

    rows, _, _ = read_eval_source(task, None)
    exclude = set(eval_texts)
    pool = [r for r in rows if r["text"] not in exclude]
    random.Random(1).shuffle(pool)
    folder = out / "task" / task.name
    sh.rmtree(folder, ignore_errors=True)
    sh.copytree(task.path, folder)
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in pool[:n]))
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    cfg["inputs"] = {"source": {"path": "inputs.jsonl", "format": "jsonl"}}
    (folder / "eval_inputs.jsonl").write_text(
        "".join(json.dumps({"text": t, "gold": g}) + "\n" for t, g in zip(eval_texts, eval_gold)))
    cfg["eval"]["source"] = {"path": "eval_inputs.jsonl", "format": "jsonl", "fields": {"text": "text", "gold": "gold"}}
    cfg["eval"]["gold_map"] = {}
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.environ["DISTILL_DATA_DIR"] = str(out / "data")
    return load(folder)


def ensure_dataset(task, version: str | None, rebuild: bool = False) -> str:
    """The dataset version to train on; generate + curate first when there is none (or ``rebuild``:
    the --rt-inputs task, whose inputs depend on the eval sample; its answers come from the cache)."""
    paths = TaskPaths(task.name)
    if rebuild or (version is None and not paths.latest_pointer.exists()):
        from pipeline.stages.curate import run_curate
        from pipeline.stages.generate import run_generate

        print("no dataset version: generating with the task's teacher, then curating", file=sys.stderr)
        if rebuild or not paths.generated_jsonl.exists():
            run_generate(task, quiet=True)
        run_curate(task, quiet=True)
    return paths.version_dir(version).name


def real_inputs(task, limit: int, seed: int = 0):
    """A label-balanced sample of the eval source: (prompt texts as messages, gold labels)."""
    from pipeline.evaluation.eval_inputs import read_eval_source
    from pipeline.prompts import PromptRenderer

    rows, golds, _ = read_eval_source(task, None)
    by_label: dict[str, list[int]] = {}
    for i, g in enumerate(golds):
        by_label.setdefault(g, []).append(i)
    rng = random.Random(seed)
    per = limit // max(len(by_label), 1)
    picked = sorted(i for idx in by_label.values() for i in rng.sample(idx, min(per, len(idx))))
    renderer = PromptRenderer.for_task(task)
    return [renderer.render(rows[i]) for i in picked], [golds[i] for i in picked], [rows[i]["text"] for i in picked]


def heldout_inputs(task, version: str):
    from pipeline.records import TrainRow, read_jsonl

    rows = list(read_jsonl(TaskPaths(task.name).version_dir(version) / "eval.jsonl", TrainRow))
    rows = [r for r in rows if r.label]
    return [r.prompt for r in rows], [r.label for r in rows]


def label_logprobs(model, tok, texts: list[str], labels: list[str], chunk: int = 32) -> list[dict[str, float]]:
    """log P(label string, then the stop token | prompt): the label as the model's whole answer.
    Left padding puts every label at the end, so only its last positions need logits."""
    import torch

    stop = tok.convert_tokens_to_ids(tok.eos_token)
    label_ids = [tok(label, add_special_tokens=False)["input_ids"] + [stop] for label in labels]
    tail = max(len(lab) for lab in label_ids)
    seqs = [tok(t, add_special_tokens=False)["input_ids"] + lab for t in texts for lab in label_ids]
    out: list[float] = []
    for start in range(0, len(seqs), chunk):
        part = seqs[start : start + chunk]
        width = max(len(x) for x in part)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in part])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in part])
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                           logits_to_keep=tail + 1).logits.float().log_softmax(-1)
        for row in range(len(part)):
            lab = label_ids[(start + row) % len(labels)]
            first = tail - len(lab)
            out.append(sum(logits[row, first + j, t].item() for j, t in enumerate(lab)))
    return [dict(zip(labels, out[i : i + len(labels)])) for i in range(0, len(out), len(labels))]


def predict(model_dir: Path, prompts, labels: list[str]) -> tuple[list[str], list[float]]:
    """(argmax label, log-odds of the first label over the second) per prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    texts = [tok.apply_chat_template([m.model_dump() for m in p], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    scores = label_logprobs(model, tok, texts, labels)
    margins = [s[labels[0]] - s[labels[1]] for s in scores]
    return [max(s, key=s.get) for s in scores], margins


def auc(margins: list[float], gold: list[str], positive: str) -> float:
    """ROC AUC of the margin for ``positive`` (Mann-Whitney; ties count half): threshold-free, so
    it credits a student that ranks inputs right even when a biased teacher moved its argmax."""
    pos = [m for m, g in zip(margins, gold) if g == positive]
    neg = [m for m, g in zip(margins, gold) if g != positive]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def corr(a: list[float], b: list[float]) -> float:
    return statistics.correlation(a, b) if len(a) > 1 and statistics.pstdev(a) and statistics.pstdev(b) else 0.0


def agree(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(len(a), 1)


def mean_sd(xs: list[float]) -> dict:
    return {"mean": round(statistics.fmean(xs), 4), "sd": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
            "runs": [round(x, 4) for x in xs]}


def train_once(task, version: str, method: str, seed: int, args) -> tuple[Path, float, int]:
    from pipeline.stages.train import run_train

    # gradient checkpointing off: on a CPU it only re-runs the forward, and memory is not short here
    overrides = {"max_steps": args.steps, "per_device_train_batch_size": args.batch_size,
                 "learning_rate": args.lr, "seed": seed, "save_strategy": "no", "logging_steps": args.steps,
                 "max_length": 256, "gradient_checkpointing": False}
    m = run_train(task, quiet=True, version=version, method=method, overrides=overrides,
                  temperature=args.temperature, alpha=args.alpha, evaluate=False)
    hist = json.loads((Path(m["output_dir"]) / "metrics.json").read_text())["log_history"]
    tokens = max(int(h.get("num_tokens", 0)) for h in hist)
    return Path(m["output_dir"]), m["metrics"]["train_runtime"], tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="prompts/sentiment")
    ap.add_argument("--version", default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--eval-limit", type=int, default=200)
    ap.add_argument("--out", default="bench/results/kd_vs_sft")
    ap.add_argument("--keep", action="store_true", help="Keep the trained students.")
    ap.add_argument("--layer-map", default=None,
                    help="Comma-separated teacher layers for a from_teacher_layers student (default: the task's).")
    ap.add_argument("--rt-inputs", type=int, default=0, metavar="N",
                    help="Build the dataset from N real review snippets (labelled by the task's teacher through "
                         "run_generate + run_curate, in the bench's own data folder) instead of the demo's "
                         "teacher-written inputs.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    os.environ["DISTILL_MODELS_DIR"] = str(out / "models")

    t0 = time.perf_counter()
    task = load_task(args.task)
    labels = task.config.output.labels
    real_prompts, real_gold, real_texts = real_inputs(task, args.eval_limit)
    if args.rt_inputs:
        task = rt_inputs_task(task, args.rt_inputs, out, real_texts, real_gold)
    version = ensure_dataset(task, args.version, rebuild=bool(args.rt_inputs))
    if args.layer_map:
        student = task.config.student.model_copy(update={"layer_map": [int(x) for x in args.layer_map.split(",")]})
        task = replace(task, config=task.config.model_copy(update={"student": student}))
    held_prompts, held_teacher = heldout_inputs(task, version)
    from pipeline.local_models import resolve_model_path

    teacher_dir = resolve_model_path(task.config.teacher.model)
    teacher_real, teacher_margin = predict(teacher_dir, real_prompts, labels)
    keys = ("agreement_heldout", "agreement_real", "accuracy_real", "auc_real", "margin_corr_real", "tokens_per_s")
    results: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in ("sft", "kd")}
    ratios = []
    for seed in range(args.seeds):
        order = ("sft", "kd") if seed % 2 == 0 else ("kd", "sft")
        tps = {}
        for method in order:
            model_dir, runtime, tokens = train_once(task, version, method, seed, args)
            tps[method] = tokens / runtime
            r = results[method]
            r["tokens_per_s"].append(tps[method])
            r["agreement_heldout"].append(agree(predict(model_dir, held_prompts, labels)[0], held_teacher))
            pred_real, margin = predict(model_dir, real_prompts, labels)
            r["agreement_real"].append(agree(pred_real, teacher_real))
            r["accuracy_real"].append(agree(pred_real, real_gold))
            r["auc_real"].append(auc(margin, real_gold, labels[0]))
            r["margin_corr_real"].append(corr(margin, teacher_margin))
            print(f"seed {seed} {method:3s}: " + " ".join(f"{k}={r[k][-1]:.3f}" for k in keys), file=sys.stderr)
            if not args.keep:
                shutil.rmtree(model_dir, ignore_errors=True)
        ratios.append(tps["kd"] / tps["sft"])

    summary = {m: {k: mean_sd(v) for k, v in res.items()} for m, res in results.items()}
    print(f"\n{'metric':20s} {'SFT (mean ± sd)':>20s} {'KD (mean ± sd)':>20s}")
    for k in keys:
        s, d = summary["sft"][k], summary["kd"][k]
        print(f"{k:20s} {s['mean']:>11.3f} ± {s['sd']:<6.3f} {d['mean']:>11.3f} ± {d['sd']:<6.3f}")
    ratio = mean_sd(ratios)
    ratio["median"] = round(statistics.median(ratios), 4)  # robust to one run slowed by a busy machine
    print(f"KD tokens/s relative to SFT: {ratio['mean']:.3f} ± {ratio['sd']:.3f}, median {ratio['median']:.3f} "
          "(target >= 0.87)")
    print(f"teacher on the real inputs: accuracy {agree(teacher_real, real_gold):.3f}, "
          f"AUC {auc(teacher_margin, real_gold, labels[0]):.3f}")
    print(json.dumps({
        "bench": "kd_vs_sft", "task": task.name, "dataset_version": version,
        "inputs": f"{args.rt_inputs} real snippets" if args.rt_inputs else "teacher-written (demo task)",
        "seeds": args.seeds, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "student": task.config.student.model_dump(), "temperature": args.temperature, "alpha": args.alpha,
        "n_train": len((TaskPaths(task.name).version_dir(version) / "train.jsonl").read_text().splitlines()),
        "n_heldout": len(held_prompts), "n_real": len(real_prompts),
        "teacher_accuracy_real": round(agree(teacher_real, real_gold), 4),
        "teacher_auc_real": round(auc(teacher_margin, real_gold, labels[0]), 4),
        "sft": summary["sft"], "kd": summary["kd"],
        "kd_speed_ratio": ratio, "kd_speed_target_met": ratio["median"] >= 0.87,
        "wall_s": round(time.perf_counter() - t0, 1),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
