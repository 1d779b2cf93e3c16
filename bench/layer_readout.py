"""How far a cut of the teacher's bottom layers can agree with it: a linear readout per layer.

    .venv/bin/python bench/layer_readout.py [--task prompts/sentiment] [--eval-limit 500]

Reads:  the task's newest dataset version (its training rows: prompts and the teacher's calibrated
        soft labels; `make demo` or `distill run` first), its local teacher (from_teacher_layers'
        `student.teacher_model`), and --eval-limit inputs of `eval.source`, which the teacher labels
        the way evaluate does (dataset_label_weights: the calibration the dataset used).
Prints: a table, then ONE JSON line with every figure and a `targets_met` map.

For every layer k, the teacher's hidden state after layer k at the position that predicts the
answer (through the final norm, as a student cut there reads it) is read by the probe's own fit
(pipeline/training/label_head.py: ridge toward the head's label rows, on the teacher's standardised
centred log-probs, the strength chosen on every fifth row); its argmax on the evaluation inputs is
compared with the teacher's label. That is what `train.label_head: probe` gives a student cut at k
(labels with distinct first tokens) before any fine-tuning, and, with
the whole student frozen, an estimate of what fine-tuning must add. `cost_ratio` is the layers'
share only (30 / k for SmolLM2): the embeddings, final norm and one position of the head are the
same for both, so a measured ratio is lower (6 layers: 5.0 here, 4.3-4.8x measured by evaluate).
Target (issue 10's 85% agreement at >= 4x cheaper): some k with cost_ratio >= 4 reads >= 85%.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent


def ridge_agreement(train_x, train_probs, eval_x, eval_labels, prior=None) -> tuple[float, float]:
    """(agreement on the evaluation inputs, the chosen strength): the probe's own fit
    (pipeline/training/label_head.py: probe_targets, fit_rows toward ``prior``, the head's label rows)."""
    import numpy as np

    from pipeline.training.label_head import fit_rows, probe_targets

    targets = probe_targets(train_probs)
    prior = np.zeros((targets.shape[1], train_x.shape[1])) if prior is None else prior
    w, info = fit_rows(np.asarray(train_x, dtype=np.float64), targets, prior)
    pred = (np.asarray(eval_x, dtype=np.float64) @ w.T).argmax(1)
    return float(np.mean(pred == np.asarray(eval_labels))), info["ridge"]


def answer_states(model, tokenizer, texts: list[str], batch_size: int = 32):
    """(n, layers + 1, hidden): every layer's output at the last prompt position, through the final norm."""
    import numpy as np
    import torch

    from pipeline.evaluation.student import _positions, encode

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = encode(tokenizer, texts[i:i + batch_size])
            hs = model.model(**enc, position_ids=_positions(enc["attention_mask"]), output_hidden_states=True).hidden_states
            # transformers' last hidden state is already through the final norm; the others are not
            states = [model.model.norm(h[:, -1]) for h in hs[:-1]] + [hs[-1][:, -1]]
            out.append(torch.stack(states, 1).float().numpy())
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.kd_vs_sft import real_eval
    from pipeline.config.task import load_task
    from pipeline.errors import DistillError
    from pipeline.evaluation.student import _prompt_texts
    from pipeline.label_scoring import label_completion_ids
    from pipeline.local_models import resolve_model_path
    from pipeline.paths import TaskPaths
    from pipeline.training.data import read_train_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default=str(REPO / "prompts" / "sentiment"))
    ap.add_argument("--eval-limit", type=int, default=500)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    task = load_task(Path(args.task))
    labels = task.config.output.labels
    teacher_name = task.config.student.teacher_model or task.config.teacher.model
    try:
        vdir = TaskPaths(task.name).version_dir(None)
    except DistillError as exc:  # no dataset yet: one line, not a traceback
        raise SystemExit(f"{exc} (the demo's: `make demo`)") from None
    version = vdir.name
    rows = [r for _, r in read_train_rows(vdir / "train.jsonl") if r.soft_label]
    prompts, _, teacher_labels = real_eval(task, version, args.eval_limit)
    path = resolve_model_path(teacher_name)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    train_x = answer_states(model, tok, _prompt_texts(tok, [r.prompt for r in rows]))
    eval_x = answer_states(model, tok, _prompt_texts(tok, prompts))
    train_probs = [[r.soft_label.get(label, 0.0) for label in labels] for r in rows]
    # the head's rows for the labels' first tokens: what the probe fits toward (label_head.init_label_head)
    firsts = [label_completion_ids(tok, [m.model_dump() for m in rows[0].prompt], label)[0] for label in labels]
    prior = model.get_output_embeddings().weight.detach()[firsts].double().numpy()
    eval_labels = [labels.index(t) if t in labels else -1 for t in teacher_labels]
    n_layers = train_x.shape[1] - 1
    per_layer = {}
    for k in range(1, n_layers + 1):
        agreement, lam = ridge_agreement(train_x[:, k], train_probs, eval_x[:, k], eval_labels, prior)
        per_layer[k] = {"agreement": round(agreement, 4), "ridge": lam, "cost_ratio": round(n_layers / k, 2)}
    cheap = {k: v for k, v in per_layer.items() if v["cost_ratio"] >= 4}
    best_cheap = max(cheap, key=lambda k: cheap[k]["agreement"])
    print(f"linear readout of {teacher_name}'s layer k vs its labels ({len(rows)} training rows, "
          f"{len(eval_labels)} evaluation inputs, dataset {version})")
    print(f"{'k':>4s}{'cost ratio':>12s}{'agreement':>12s}")
    for k, v in per_layer.items():
        print(f"{k:>4d}{v['cost_ratio']:>12.2f}{v['agreement']:>12.3f}")
    result = {
        "bench": "layer_readout", "task": task.name, "dataset": version, "teacher": teacher_name,
        "train_rows": len(rows), "eval_inputs": len(eval_labels), "per_layer": per_layer,
        "best_at_4x": {"layer": best_cheap, **cheap[best_cheap]},
        "first_layer_reading_85": next((k for k, v in per_layer.items() if v["agreement"] >= 0.85), None),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets_met": {"a_4x_cheaper_cut_reads_85pct": cheap[best_cheap]["agreement"] >= 0.85},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
