"""Benchmark: the evaluate stage's batched student inference vs answering one request at a time.

    .venv/bin/python bench/evaluate_student.py                 # SmolLM2-135M-Instruct, 64 prompts
    .venv/bin/python bench/evaluate_student.py --model PATH --n 32 --batch-size 16 --max-new-tokens 3

The student answers the sentiment task's rendered prompts (system + few-shot + review) greedily,
exactly as ``distill evaluate`` runs it. Baseline, in the same run: the same prompts at batch size
1. Also timed: scoring the label strings for the router's confidence (batched).
Figures: requests/s for each, the batched/single speed-up, and ms per request for the confidence.
Target (2 CPU cores, SmolLM2-135M, 3-token label answers): batched >= 2x single.
Ends with ONE JSON line of all figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.config.task import load_task
from pipeline.evaluation.student import (
    _prompt_texts,
    generate_batch,
    load_student,
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
    generate_batch(model, tok, texts[:1], 1)  # warm-up

    t0 = time.perf_counter()
    for text in texts:
        generate_batch(model, tok, [text], args.max_new_tokens)
    single_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(texts), args.batch_size):
        generate_batch(model, tok, texts[i : i + args.batch_size], args.max_new_tokens)
    batched_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    for i in range(0, len(texts), args.batch_size):
        score_label_strings(model, tok, texts[i : i + args.batch_size], task.config.output.labels)
    confidence_s = time.perf_counter() - t0

    out = {
        "bench": "evaluate_student", "model": str(model_dir), "n": args.n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "single_rps": round(args.n / single_s, 2), "batched_rps": round(args.n / batched_s, 2),
        "speedup": round(single_s / batched_s, 2),
        "confidence_ms_per_request": round(1000 * confidence_s / args.n, 2),
    }
    print(f"batch size 1: {out['single_rps']} req/s; batch size {args.batch_size}: {out['batched_rps']} req/s "
          f"({out['speedup']}x); label confidence: {out['confidence_ms_per_request']} ms/request")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
