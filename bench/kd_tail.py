"""How much of a real teacher's tempered distribution lies outside its top-k, and how well each tail
treatment of the sparse KD loss estimates it (pipeline/training/kd_loss.py, docs/train.md).

    .venv/bin/python bench/kd_tail.py [--k 5,20] [--temperatures 2,4] [--student-layers 0,10,20,29]

Reads:  the embedded SmolLM2-135M-Instruct (pipeline.local_models; no network).
Writes: nothing.
Prints: a table, then ONE JSON line.

The teacher answers 12 short instructions greedily (40 tokens at most); at every answer position
its full next-token distribution p is kept. For each k and T the tempered tail share of the target,
sum_{tail} p^(1/T) / sum_all p^(1/T), is compared with what each treatment would use, knowing only the
top-k and the tail mass r:
  even      (V-k) * (r/(V-k))^(1/T): r spread evenly (the treatment before issue 10)
  powerlaw  p_n = p_k (n/k)^-s for ranks n > k, s chosen so the tail holds r (sum by Euler-Maclaurin)
  student   r with the tail shape of a from_teacher_layers student (ours; exact for the teacher itself)
Figures: the median true share, each treatment's median share and mean absolute error (in shares).
Also the log-log slope of the sorted distribution over three rank ranges.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = [
    "Summarise in one sentence: The city council voted to add bike lanes on Main Street after months of debate.",
    "Write one short sentence about a rainy day.", "Give a one-line review of a comedy film you loved.",
    "Explain in one sentence why the sky is blue.", "Describe a cat in one sentence.",
    "What is a good name for a coffee shop? Answer in one sentence.",
    "Summarise in one sentence: A storm closed the airport for six hours on Monday, delaying 200 flights.",
    "Summarise in one sentence: The bakery on Elm Street won a national award for its sourdough bread.",
    "What is the capital of France? Answer in one sentence.", "List three colours.",
    "Summarise in one sentence: Scientists found that bees can recognise human faces in a new study.",
    "Write a short thank-you note to a teacher.",
]


def power_sum(a, m: float, big_m: float, exact_terms: int = 8):
    """sum_{n=m}^{M} n^-a for a tensor of exponents: the first terms exactly, the rest by
    Euler-Maclaurin (integral + endpoint average + first derivative correction); error < 1e-7 here."""
    import torch

    n = m + torch.arange(exact_terms, dtype=a.dtype)
    head = n.pow(-a[:, None]).sum(-1)
    lo = m + exact_terms
    c = 1 - a
    log_ratio = math.log(big_m / lo)
    safe_c = torch.where(c.abs() < 1e-6, torch.ones_like(c), c)
    integral = lo ** c * torch.where(c.abs() < 1e-6, torch.full_like(c, log_ratio), torch.expm1(c * log_ratio) / safe_c)
    return head + integral + 0.5 * (lo ** -a + big_m ** -a) + a / 12 * (lo ** (-a - 1) - big_m ** (-a - 1))


def powerlaw_tail(p_k, r, k: int, vocab: int, temperature: float):
    """Tempered tail mass when the tail continues the k-th probability as a power law in rank."""
    import torch

    lo, hi = torch.zeros_like(r), torch.full_like(r, 400.0)
    for _ in range(60):  # bisection: the tail mass falls as s grows
        mid = (lo + hi) / 2
        heavy = p_k.log() + mid * math.log(k) + power_sum(mid, k + 1, vocab).log() > r.log()
        lo, hi = torch.where(heavy, mid, lo), torch.where(heavy, hi, mid)
    s = (lo + hi) / 2
    return p_k ** (1 / temperature) * k ** (s / temperature) * power_sum(s / temperature, k + 1, vocab)


def teacher_positions(model, tok):
    """The teacher's full log-distribution at each position of its greedy answers, and the token ids."""
    import torch

    dists, seqs = [], []
    for prompt in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=40, do_sample=False)
            dists.append(model(out).logits[0, ids.shape[1] - 1 : -1].double().log_softmax(-1))
        seqs.append((out, ids.shape[1]))
    return torch.cat(dists), seqs


def student_positions(student, seqs):
    import torch

    with torch.inference_mode():
        return torch.cat([student(out).logits[0, start - 1 : -1].double() for out, start in seqs])


def measure(k: int, temperature: float, teacher_lp, student_logits) -> dict:
    import torch

    vocab = teacher_lp.shape[-1]
    p = teacher_lp.exp()
    top, ids = p.topk(k, -1)
    r = (1 - top.sum(-1)).clamp(min=1e-12)
    head = (top ** (1 / temperature)).sum(-1)
    true_tail = (p.scatter(-1, ids, 0.0) ** (1 / temperature)).sum(-1)
    student_tail = student_logits.scatter(-1, ids, float("-inf"))
    shape = torch.logsumexp(student_tail / temperature, -1) - torch.logsumexp(student_tail, -1) / temperature
    estimates = {
        "even": (vocab - k) ** (1 - 1 / temperature) * r ** (1 / temperature),
        "powerlaw": powerlaw_tail(top[:, -1], r, k, vocab, temperature),
        "student": r ** (1 / temperature) * shape.exp(),
    }
    share = true_tail / (head + true_tail)
    row = {"k": k, "T": temperature, "positions": len(r), "median_r": round(r.median().item(), 4),
           "true_tail_share": round(share.median().item(), 3)}
    for name, est in estimates.items():
        est_share = est / (head + est)
        row[name] = {"median_share": round(est_share.median().item(), 3),
                     "mean_abs_err": round((est_share - share).abs().mean().item(), 3)}
    return row


def slopes(teacher_lp) -> dict:
    import torch

    lp = teacher_lp.sort(-1, descending=True).values
    x_all = torch.arange(1, lp.shape[-1] + 1, dtype=torch.double).log()
    out = {}
    for lo, hi in ((20, 200), (200, 2000), (2000, 20000)):
        x, y = x_all[lo:hi], lp[:, lo:hi]
        xc = x - x.mean()
        s = -((y - y.mean(-1, keepdim=True)) * xc).sum(-1) / (xc * xc).sum()
        out[f"ranks_{lo}_{hi}"] = round(s.median().item(), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--k", default="5,20")
    p.add_argument("--temperatures", default="2,4")
    p.add_argument("--student-layers", default="0,10,20,29", help="the from_teacher_layers student's layer map")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.local_models import resolve_model_path
    from pipeline.training.student_init import from_teacher_layers

    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    teacher_lp, seqs = teacher_positions(teacher, tok)
    student = from_teacher_layers(path, [int(x) for x in args.student_layers.split(",")]).eval()
    student_logits = student_positions(student, seqs)
    rows = [measure(int(k), float(t), teacher_lp, student_logits)
            for k in args.k.split(",") for t in args.temperatures.split(",")]
    print(f"SmolLM2-135M, {len(teacher_lp)} answer positions; tempered tail share of the target "
          f"(median; mean |error|); student = layers {args.student_layers}")
    print(f"{'k':>3s} {'T':>3s} {'median r':>9s} {'true':>6s} {'even':>15s} {'powerlaw':>15s} {'student':>15s}")
    for row in rows:
        cells = "".join(f"{row[n]['median_share']:>8.3f} ({row[n]['mean_abs_err']:.3f})" for n in ("even", "powerlaw", "student"))
        print(f"{row['k']:>3d} {row['T']:>3.0f} {row['median_r']:>9.4f} {row['true_tail_share']:>6.3f}{cells}")
    result = {"bench": "kd_tail", "positions": len(teacher_lp), "student_layers": args.student_layers,
              "log_log_slope_median": slopes(teacher_lp), "rows": rows}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
