"""Benchmark: a local teacher's labels per second, scored (one prefill, every label's probability)
against generated (the answer's tokens, with top-k logprobs), on the demo's prompts.

    .venv/bin/python bench/label_scoring.py [--n 64] [--batch-size 16] [--many-labels 77]

Both paths run through the same ``hf`` backend (``HFTeacher.complete_batch``, the call the
executor makes), on the same real Rotten Tomatoes snippets rendered with prompts/sentiment's
template, at the same batch size, threads and machine, in one run:
  generate  the path label tasks took before: max_tokens 3, top_logprobs 5, greedy; the soft label
            is read from the first token's top-5
  score     ``TeacherRequest.labels``: the whole label set's probabilities (pipeline/label_scoring.py)
Also reported: how often the two give the same label (raw, before calibration), and the share of
generated answers whose top-5 missed a label entirely (their soft label is incomplete).
Target: score >= 5x generate in labels/s. Ends with ONE JSON line of all figures.

--many-labels N measures what many labels cost instead: N intent labels in the style of a banking
set (`card_arrival`, `card_not_working`, `top_up_failed`, ...: 11 topics x 8 outcomes, many sharing
their first tokens), listed in the prompt after each snippet. Generating then runs as many tokens as
the longest label's surface form plus one; scoring runs the prompt pass and one token-tree pass over
every distinct prefix of the labels' surface forms. No target: it is the price of the whole
distribution, which a generated top-k gives only for the labels that make each token's top-k.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
MANY_LABELS = [f"{topic}_{outcome}" for topic in (
    "card", "top_up", "transfer", "cash_withdrawal", "exchange_rate", "pin", "refund", "balance", "beneficiary",
    "direct_debit", "virtual_card") for outcome in (
    "arrival", "not_working", "failed", "pending", "reverted", "charge", "limits", "blocked")]


def longest_surface_form(model_name: str, labels: list[str]) -> int:
    """Tokens in the longest surface form of any label (pipeline/label_scoring.surface_variants)."""
    from transformers import AutoTokenizer

    from pipeline.label_scoring import surface_variants
    from pipeline.local_models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(model_name))
    return max(len(tok(v, add_special_tokens=False)["input_ids"]) for label in labels for v in surface_variants(label))


def main() -> None:
    from pipeline.config.task import load_task
    from pipeline.config.teacher import TeacherConfig
    from pipeline.curation.parse import soft_label_from_logprobs
    from pipeline.inputs import read_source
    from pipeline.prompts import PromptRenderer
    from pipeline.records import Message
    from pipeline.teachers.base import make_request
    from pipeline.teachers.hf_backend import HFTeacher

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--many-labels", type=int, default=None, metavar="N", help="N synthetic intent labels (at most 88)")
    args = ap.parse_args()
    task = load_task(REPO / "prompts" / "sentiment")
    labels = task.config.output.labels
    rows = read_source(task.config.eval.source, task.path, "eval.source")[: args.n]
    renderer = PromptRenderer.for_task(task)
    prompts = [renderer.render({"text": r["text"]}) for r in rows]
    teacher = HFTeacher(TeacherConfig(backend="hf", model=task.config.teacher.model, batch_size=args.batch_size))
    params = {"temperature": 0.0, "max_tokens": 3}
    if args.many_labels:
        labels = MANY_LABELS[: args.many_labels]
        prompts = [[Message(role="user", content=f"Message: {r['text']}\nWhich intent is it: {', '.join(labels)}?")]
                   for r in rows]
        params["max_tokens"] = longest_surface_form(teacher.model, labels) + 1
    generate = [make_request("hf", teacher.model, p, params, 5)[0] for p in prompts]
    score = [make_request("hf", teacher.model, p, {}, None, labels=labels)[0] for p in prompts]

    async def timed(reqs):
        await teacher.complete_batch(reqs[:2])  # warm-up: loads the model
        t0 = time.perf_counter()
        out = await teacher.complete_batch(reqs)
        return out, time.perf_counter() - t0

    gen_out, gen_s = asyncio.run(timed(generate))
    score_out, score_s = asyncio.run(timed(score))
    same, incomplete = 0, 0
    for g, s in zip(gen_out, score_out):
        soft = soft_label_from_logprobs(g.logprobs, labels)
        g_label = max(soft[0], key=soft[0].get) if soft else None
        incomplete += int(soft is None or min(soft[0].values()) == 0.0)
        same += int(g_label == max(s.label_logprobs, key=s.label_logprobs.get))
    figures = {
        "n": args.n, "batch_size": args.batch_size, "labels": len(labels), "generate_max_tokens": params["max_tokens"],
        "generate_labels_per_s": round(args.n / gen_s, 2), "score_labels_per_s": round(args.n / score_s, 2),
        "speedup": round(gen_s / score_s, 2),
        "same_raw_label": round(same / args.n, 3),
        "generate_soft_label_incomplete": round(incomplete / args.n, 3),
    }
    # the target is the demo's (two labels); many labels have none
    figures["targets_met"] = {} if args.many_labels else {"score_at_least_5x_generate": figures["speedup"] >= 5.0}
    print(f"generate {figures['generate_labels_per_s']} labels/s | score {figures['score_labels_per_s']} labels/s "
          f"| {figures['speedup']}x | incomplete top-5 soft labels: {figures['generate_soft_label_incomplete']:.0%}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
