"""Benchmark: the evaluate stage's batched student inference vs answering one request at a time.

    .venv/bin/python bench/evaluate_student.py                 # SmolLM2-135M-Instruct, 64 prompts
    .venv/bin/python bench/evaluate_student.py --model PATH --n 32 --batch-size 16 --max-new-tokens 3

The student answers the sentiment task's rendered prompts (system + few-shot + review) greedily,
exactly as ``distill evaluate`` runs it. Baseline, in the same run: the same prompts at batch size
1. Also timed: scoring the label strings for the router's confidence (batched), alone and sharing
the prompt's KV cache with the answer (as ``distill evaluate`` does).
Figures: requests/s for each, the batched/single speed-up, ms per request for the confidence, and
the speed-up from sharing the prompt pass.
Targets (2 CPU cores, SmolLM2-135M, 3-token label answers): batched >= 2x single; sharing >= 1.5x.
Ends with ONE JSON line of all figures.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.task import load_task
from pipeline.evaluation.student import (
    _prompt_texts,
    encode,
    generate_batch,
    load_student,
    prefix_cache,
    score_label_strings,
)
from pipeline.prompts import PromptRenderer

REVIEWS = [
    "A warm, funny film with a terrific cast.", "Two hours of my life I will never get back.",
    "The plot drags but the ending lands.", "Gorgeous to look at and utterly hollow.",
    "I laughed the whole way through.", "A tedious, overlong mess.", "The soundtrack alone is worth it.",
    "Clumsy dialogue sinks a promising idea.",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model folder or the embedded model's name")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=3)
    args = ap.parse_args()

    if Path(args.model).is_dir():
        model_dir = Path(args.model)
    else:
        from pipeline.local_models import resolve_model_path

        model_dir = resolve_model_path(args.model)
    task = load_task("prompts/sentiment")
    renderer = PromptRenderer.for_task(task)
    prompts = [renderer.render({"text": f"{REVIEWS[i % len(REVIEWS)]} (#{i})"}) for i in range(args.n)]
    model, tok = load_student(model_dir)
    texts = _prompt_texts(tok, prompts)
    labels = task.config.output.labels
    generate_batch(model, tok, encode(tok, texts[:1], model.device), 1)  # warm-up
    batches = [encode(tok, texts[i : i + args.batch_size], model.device) for i in range(0, len(texts), args.batch_size)]

    t0 = time.perf_counter()
    for text in texts:
        generate_batch(model, tok, encode(tok, [text], model.device), args.max_new_tokens)
    single_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for enc in batches:
        generate_batch(model, tok, enc, args.max_new_tokens)
    batched_s = time.perf_counter() - t0

    # the router's confidence alone (own prompt pass), then shared with the answer (as evaluate runs it)
    t0 = time.perf_counter()
    for enc in batches:
        score_label_strings(model, tok, enc, labels)
    confidence_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for enc in batches:
        shared = prefix_cache(model, enc)
        generate_batch(model, tok, enc, args.max_new_tokens, cache=copy.deepcopy(shared))
        score_label_strings(model, tok, enc, labels, cache=shared)
    shared_s = time.perf_counter() - t0

    out = {
        "bench": "evaluate_student", "model": str(model_dir), "n": args.n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "single_rps": round(args.n / single_s, 2), "batched_rps": round(args.n / batched_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "confidence_ms_per_request": round(1000 * confidence_s / args.n, 2),
        "answer_plus_confidence_separate_ms": round(1000 * (batched_s + confidence_s) / args.n, 2),
        "answer_plus_confidence_shared_ms": round(1000 * shared_s / args.n, 2),
        "sharing_speedup": round((batched_s + confidence_s) / shared_s, 2),
    }
    print(f"batch size 1: {out['single_rps']} req/s; batch size {args.batch_size}: {out['batched_rps']} req/s "
          f"({out['speedup']}x); label confidence: {out['confidence_ms_per_request']} ms/request; answer + "
          f"confidence: {out['answer_plus_confidence_separate_ms']} ms separately, "
          f"{out['answer_plus_confidence_shared_ms']} ms sharing the prompt pass ({out['sharing_speedup']}x)")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
