"""Width instead of depth: a student that keeps all of the teacher's layers, each narrowed, against
the demo's bottom-layer cut, at the same cost.

    .venv/bin/python bench/width_prune.py [--kv-groups 1] [--mlp 256] [--calib 512]

Reads the same things as bench/layer_readout.py (the demo's newest dataset, its local teacher and
500 evaluation snippets labelled the way evaluate labels them; `make demo` first).

The teacher decides late (bench/layer_readout.py: a cut of its bottom k layers reads 0.70-0.74 up to
k = 13, 85% only from k = 19), so a ≥ 4x cheaper student that keeps every layer might keep the
decision. Each layer is narrowed to --kv-groups of SmolLM2's three key/value groups (their query
heads with them) and --mlp of its 1,536 MLP neurons, then its output projections are refitted by
ridge least squares so that the narrowed model's residual stream follows the teacher's, layer by
layer, on --calib of the training prompts (every position, each weighted by 1 / the teacher's state
norm, since SmolLM2's first positions carry states hundreds of times larger than the rest). Which
neurons to keep: backward elimination on the refit's own error (the optimal-brain-surgeon rule for a
least-squares layer, as structured pruners use it), 128 at a time; which key/value group: the one
whose refit leaves the least error. Both students are then read by the probe's own fit
(bench/layer_readout.ridge_agreement on the final state at the answer position), and timed against
the teacher on the same 128 prompts at batch 16. Ends with ONE JSON line of all figures.

Measured (2026-12-07, 2 cores): see docs/train.md, "How far a bottom cut can go".
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
RIDGE = 1e-3  # relative to the Gram matrix's mean diagonal


def ridge_solve(gram, cross, lam: float = RIDGE):
    import torch

    reg = lam * torch.diagonal(gram).mean()
    return torch.linalg.solve(gram + reg * torch.eye(gram.shape[0], dtype=gram.dtype), cross)


def eliminate(gram, cross, keep: int, chunk: int = 128, lam: float = RIDGE):
    """The ``keep`` columns to keep: drop, ``chunk`` at a time, those whose removal (the rest refitted)
    raises the least-squares error least, ||w_j||^2 / (G^-1)_jj (optimal brain surgeon)."""
    import torch

    alive = torch.arange(gram.shape[0])
    while len(alive) > keep:
        g = gram[alive][:, alive]
        inv = torch.linalg.inv(g + lam * torch.diagonal(g).mean() * torch.eye(len(alive), dtype=g.dtype))
        cost = ((inv @ cross[alive]) ** 2).sum(1) / torch.diagonal(inv)
        drop = torch.topk(cost, min(chunk, len(alive) - keep), largest=False).indices
        mask = torch.ones(len(alive), dtype=torch.bool)
        mask[drop] = False
        alive = alive[mask]
    return alive.sort().values


def narrow(teacher, tokenizer, texts: list[str], kv_groups: int, mlp: int, batch_size: int = 32, log=print):
    """A copy of ``teacher`` (a Llama) with ``kv_groups`` key/value groups and ``mlp`` MLP neurons per
    layer, its o_proj and down_proj refitted to follow the teacher's residual stream on ``texts``."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = teacher.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    scfg = copy.deepcopy(cfg)
    scfg.num_attention_heads, scfg.num_key_value_heads = rep * kv_groups, kv_groups
    scfg.head_dim, scfg.intermediate_size = head_dim, mlp
    student = AutoModelForCausalLM.from_config(scfg).eval()
    student.model.embed_tokens.weight.data.copy_(teacher.model.embed_tokens.weight.data)
    student.model.norm.weight.data.copy_(teacher.model.norm.weight.data)
    if not scfg.tie_word_embeddings:
        student.lm_head.weight.data.copy_(teacher.lm_head.weight.data)
    tokenizer = copy.copy(tokenizer)
    tokenizer.padding_side = "right"  # causal attention alone is then exact at every real position
    batches = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            h = teacher.model.embed_tokens(enc["input_ids"])
            pos = torch.arange(h.shape[1])[None].expand(h.shape[0], -1)
            batches.append({"mask": enc["attention_mask"].bool(), "pe": teacher.model.rotary_emb(h, pos),
                            "t": h, "s": h.clone()})

        def fit(batch, z, target):
            w = 1.0 / batch["ref"][batch["mask"]].norm(dim=1, keepdim=True)
            z, y = z[batch["mask"]] * w, target[batch["mask"]] * w
            return (z.T @ z).double(), (z.T @ y).double()

        heads = {}  # o_proj's input: every query head's output, before the projection
        for n, (tl, sl) in enumerate(zip(teacher.model.layers, student.model.layers)):
            sl.input_layernorm.weight.copy_(tl.input_layernorm.weight)
            sl.post_attention_layernorm.weight.copy_(tl.post_attention_layernorm.weight)
            hook = tl.self_attn.o_proj.register_forward_hook(lambda m, i, o: heads.__setitem__("z", i[0]))
            gram = cross = 0
            for b in batches:
                b["t_mid"] = b["t"] + tl.self_attn(tl.input_layernorm(b["t"]), b["pe"], None)[0]
                b["t_out"] = b["t_mid"] + tl.mlp(tl.post_attention_layernorm(b["t_mid"]))
                tl.self_attn(tl.input_layernorm(b["s"]), b["pe"], None)  # the student stream's heads
                b["ref"] = b["t_mid"]
                g, c = fit(b, heads["z"], b["t_mid"] - b["s"])
                gram, cross = gram + g, cross + c
            hook.remove()
            best = None
            for groups in combinations(range(cfg.num_key_value_heads), kv_groups):
                cols = torch.cat([torch.arange(g * rep * head_dim, (g + 1) * rep * head_dim) for g in groups])
                w = ridge_solve(gram[cols][:, cols], cross[cols])
                gain = float((w * cross[cols]).sum())  # the error is a constant minus this
                if best is None or gain > best[0]:
                    best = (gain, groups, cols, w)
            _, groups, cols, w = best
            kv = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
            sl.self_attn.q_proj.weight.copy_(tl.self_attn.q_proj.weight[cols])
            sl.self_attn.k_proj.weight.copy_(tl.self_attn.k_proj.weight[kv])
            sl.self_attn.v_proj.weight.copy_(tl.self_attn.v_proj.weight[kv])
            sl.self_attn.o_proj.weight.copy_(w.T.float())
            gram = cross = 0
            for b in batches:
                b["s_mid"] = b["s"] + sl.self_attn(sl.input_layernorm(b["s"]), b["pe"], None)[0]
                x = tl.post_attention_layernorm(b["s_mid"])
                b["ref"] = b["t_out"]
                g, c = fit(b, tl.mlp.act_fn(tl.mlp.gate_proj(x)) * tl.mlp.up_proj(x), b["t_out"] - b["s_mid"])
                gram, cross = gram + g, cross + c
            keep = eliminate(gram, cross, mlp)
            sl.mlp.gate_proj.weight.copy_(tl.mlp.gate_proj.weight[keep])
            sl.mlp.up_proj.weight.copy_(tl.mlp.up_proj.weight[keep])
            sl.mlp.down_proj.weight.copy_(ridge_solve(gram[keep][:, keep], cross[keep]).T.float())
            err = 0.0
            for b in batches:
                b["s"] = b["s_mid"] + sl.mlp(sl.post_attention_layernorm(b["s_mid"]))
                b["t"] = b["t_out"]
                m = b["mask"]
                err += float(((b["s"] - b["t"])[m].norm(dim=1) / b["t"][m].norm(dim=1)).square().sum())
                for key in ("t_mid", "t_out", "s_mid", "ref"):
                    del b[key]
            log(f"layer {n}: key/value groups {groups}, relative error {err / sum(int(b['mask'].sum()) for b in batches):.4f}")
    return student


def forward_seconds(model, tokenizer, texts: list[str], batch_size: int = 16) -> float:
    """The best of two timed passes over ``texts`` (the students' cost, as evaluate runs them)."""
    import torch

    from pipeline.evaluation.student import _positions, encode

    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch_size):
                enc = encode(tokenizer, texts[i:i + batch_size])
                model.model(**enc, position_ids=_positions(enc["attention_mask"]))
            best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.kd_vs_sft import real_eval
    from bench.layer_readout import answer_states, ridge_agreement
    from pipeline.config.task import load_task
    from pipeline.errors import DistillError
    from pipeline.evaluation.student import _prompt_texts
    from pipeline.label_scoring import label_completion_ids
    from pipeline.local_models import resolve_model_path
    from pipeline.paths import TaskPaths
    from pipeline.training.data import read_train_rows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default=str(REPO / "prompts" / "sentiment"))
    ap.add_argument("--kv-groups", type=int, default=1)
    ap.add_argument("--mlp", type=int, default=256)
    ap.add_argument("--calib", type=int, default=512, help="training prompts the refit follows the teacher on")
    ap.add_argument("--cut", type=int, default=6, help="the depth cut compared (the demo's: 6)")
    ap.add_argument("--eval-limit", type=int, default=500)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    task = load_task(Path(args.task))
    labels = task.config.output.labels
    try:
        vdir = TaskPaths(task.name).version_dir(None)
    except DistillError as exc:
        raise SystemExit(f"{exc} (the demo's: `make demo`)") from None
    rows = [r for _, r in read_train_rows(vdir / "train.jsonl") if r.soft_label]
    prompts, _, teacher_labels = real_eval(task, vdir.name, args.eval_limit)
    path = resolve_model_path(task.config.student.teacher_model or task.config.teacher.model)
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    teacher = AutoModelForCausalLM.from_pretrained(path).eval()
    train_texts = _prompt_texts(tok, [r.prompt for r in rows])
    eval_texts = _prompt_texts(tok, prompts)
    calib = [train_texts[i] for i in np.random.default_rng(0).permutation(len(train_texts))[: args.calib]]
    t_prune = time.perf_counter()
    narrowed = narrow(teacher, tok, calib, args.kv_groups, args.mlp)
    prune_s = time.perf_counter() - t_prune
    cut = copy.deepcopy(teacher)
    cut.model.layers = cut.model.layers[: args.cut]
    cut.config.num_hidden_layers = args.cut
    train_probs = [[r.soft_label.get(label, 0.0) for label in labels] for r in rows]
    firsts = [label_completion_ids(tok, [m.model_dump() for m in rows[0].prompt], label)[0] for label in labels]
    prior = teacher.get_output_embeddings().weight.detach()[firsts].double().numpy()
    eval_labels = [labels.index(t) if t in labels else -1 for t in teacher_labels]
    figures = {}
    timed = eval_texts[:128]
    teacher_s = forward_seconds(teacher, tok, timed)
    for name, model in (("cut", cut), ("narrowed", narrowed)):
        agreement, lam = ridge_agreement(answer_states(model, tok, train_texts)[:, -1], train_probs,
                                         answer_states(model, tok, eval_texts)[:, -1], eval_labels, prior)
        layer_params = sum(p.numel() for p in model.model.layers.parameters())
        figures[name] = {"readout_agreement": round(agreement, 4), "ridge": lam,
                         "layer_param_ratio": round(sum(p.numel() for p in teacher.model.layers.parameters())
                                                    / layer_params, 2),
                         "measured_cost_ratio": round(teacher_s / forward_seconds(model, tok, timed), 2)}
        print(f"{name:>9s}: readout agreement {agreement:.3f}, {figures[name]['measured_cost_ratio']}x cheaper "
              f"(layers' parameters {figures[name]['layer_param_ratio']}x fewer)")
    result = {
        "bench": "width_prune", "task": task.name, "dataset": vdir.name, "train_rows": len(rows),
        "eval_inputs": len(eval_labels), "kv_groups": args.kv_groups, "mlp": args.mlp, "calib": len(calib),
        "cut_layers": args.cut, **figures, "prune_seconds": round(prune_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "targets_met": {
            "narrowed_at_4x_reads_above_the_cut": figures["narrowed"]["measured_cost_ratio"] >= 4
            and figures["narrowed"]["readout_agreement"] > figures["cut"]["readout_agreement"],
            "a_4x_cheaper_student_reads_85pct": any(f["measured_cost_ratio"] >= 4 and f["readout_agreement"] >= 0.85
                                                    for f in figures.values()),
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
