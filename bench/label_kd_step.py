"""Benchmark: one label-level KD training step when labels share a first token, against the
first-token path on the same batch, and against stacking one full sequence per label.

    .venv/bin/python bench/label_kd_step.py [--layers 6] [--batch-size 16] [--steps 5]

Student: SmolLM2-135M-Instruct cut to --layers of its 30 layers (from_teacher_layers), in fp32 on
the CPU. Batch: 16 intent requests. Three ways to get the student's log P(label) for 7 labels and
backpropagate the label KL (forward + backward; the optimiser step is the same for all three and
left out):
  first_token   7 labels whose first tokens differ, read at the answer's first position
                (``KDTrainer._first_token_scores``): the fast path, as the reference
  packed        7 intent labels, several sharing their first token (book_flight, book_hotel,
                book_car...), one packed forward per row (``KDTrainer._whole_label_scores``)
  stacked       the same 7 labels as B x 7 full prompt+label sequences (what the whole-label path
                did before: every prompt runs 7 times and the vocabulary is projected everywhere);
                timed on a quarter of the batch and scaled, to fit in memory
Target: packed within 2x of first_token. Ends with ONE JSON line of all figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHARED = ["book_flight", "book_hotel", "book_car", "cancel_booking", "check_status", "get_weather", "play_music"]
DISTINCT = ["flight", "hotel", "car", "cancel", "status", "weather", "music"]
UTTERANCES = [
    "I need a plane ticket to Lisbon next Friday", "find me a room in Kyoto for two nights",
    "rent a car at the Denver airport", "please cancel my reservation for tomorrow",
    "where is my order, it has not arrived", "will it rain in Oslo this weekend",
    "put on some jazz in the kitchen", "get me a flight from Boston to Austin on Monday morning",
    "is there a hotel near the conference centre with parking", "I want an SUV for a week in Sicily",
    "drop the dinner booking at eight", "has my refund been processed yet",
    "how cold will it be in Chicago tonight", "play the new album by my favourite band",
    "two seats to Rome, aisle if possible", "book a cheap hostel in Berlin",
]


def prompt_ids(tok, text: str, labels: list[str]) -> list[int]:
    msgs = [{"role": "user", "content": f"Intent of: {text}\nAnswer with one of: {', '.join(labels)}."}]
    out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def batch_for(tok, labels: list[str], label_ids: list[list[int]], n: int):
    """Right-padded rows of prompt + the first label's completion, as the collator builds them."""
    import torch

    prompts = [prompt_ids(tok, UTTERANCES[i % len(UTTERANCES)], labels) for i in range(n)]
    rows = [p + label_ids[0] for p in prompts]
    width = max(map(len, rows))
    ids = torch.full((n, width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    lab = torch.full((n, width), -100, dtype=torch.long)
    for b, (p, r) in enumerate(zip(prompts, rows)):
        ids[b, : len(r)] = torch.tensor(r)
        mask[b, : len(r)] = 1
        lab[b, len(p): len(r)] = torch.tensor(label_ids[0])
    probs = torch.softmax(torch.randn(n, len(labels)), -1)
    return prompts, {"input_ids": ids, "attention_mask": mask, "labels": lab,
                     "answer_start": torch.tensor([len(p) for p in prompts]),
                     "label_probs": probs, "label_index": torch.zeros(n, dtype=torch.long)}


def stacked_scores(model, prompts, label_ids, pad_id):
    """The old whole-label path: every prompt + every label as its own full sequence."""
    import torch

    seqs = [(p, lab) for p in prompts for lab in label_ids]
    width = max(len(p) + len(lab) for p, lab in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (p, lab) in enumerate(seqs):
        ids[r, : len(p) + len(lab)] = torch.tensor(p + lab)
        mask[r, : len(p) + len(lab)] = 1
    lp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    scores = []
    for r, (p, lab) in enumerate(seqs):
        scores.append(sum(lp[r, len(p) - 1 + t, tok] for t, tok in enumerate(lab)))
    out = torch.stack(scores)
    return out.view(len(prompts), len(label_ids))


def timed_steps(fn, steps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    from pipeline.label_scoring import label_completion_ids
    from pipeline.local_models import resolve_model_path
    from pipeline.training.label_kd import label_kl
    from pipeline.training.student_init import from_teacher_layers
    from pipeline.training.trainer import KDTrainer, add_target_logits_head

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = from_teacher_layers(path, [round(i * 29 / (args.layers - 1)) for i in range(args.layers)])
    model.train()
    add_target_logits_head(model)
    msgs = [{"role": "user", "content": "x"}]
    shared_ids = [label_completion_ids(tok, msgs, lab) for lab in SHARED]
    distinct_ids = [label_completion_ids(tok, msgs, lab) for lab in DISTINCT]
    firsts = [ids[0] for ids in distinct_ids]
    assert len(set(firsts)) == len(firsts), "the distinct labels must begin with different tokens"
    n_shared_first = len(SHARED) - len({ids[0] for ids in shared_ids})

    _, first_batch = batch_for(tok, DISTINCT, distinct_ids, args.batch_size)
    prompts, shared_batch = batch_for(tok, SHARED, shared_ids, args.batch_size)
    first_self = SimpleNamespace(first_ids=firsts)
    packed_self = SimpleNamespace(label_ids=shared_ids, processing_class=tok)

    def step(score_fn, batch):
        def run():
            model.zero_grad(set_to_none=True)
            seq_lp = score_fn(batch)
            label_kl(seq_lp, batch["label_probs"], 2.0).mean().backward()
        return run

    t_first = timed_steps(step(lambda b: KDTrainer._first_token_scores(first_self, model, b)[0], first_batch), args.steps)
    t_packed = timed_steps(step(lambda b: KDTrainer._whole_label_scores(packed_self, model, b)[0], shared_batch),
                           args.steps)
    # The stacked baseline builds B x 7 full sequences with full-vocabulary logits (gigabytes at B=16):
    # time it on a quarter of the rows, once, and scale (its cost is linear in the rows).
    part = max(1, args.batch_size // 4)
    t_stacked = timed_steps(step(lambda b: stacked_scores(model, prompts[:part], shared_ids, tok.pad_token_id),
                                 {**shared_batch, "label_probs": shared_batch["label_probs"][:part]}), 1)
    t_stacked *= args.batch_size / part
    figures = {
        "layers": args.layers, "batch_size": args.batch_size, "labels": len(SHARED),
        "labels_sharing_a_first_token": n_shared_first + 1 if n_shared_first else 0,
        "step_s": {"first_token": round(t_first, 3), "packed": round(t_packed, 3), "stacked": round(t_stacked, 3)},
        "packed_vs_first_token": round(t_packed / t_first, 2),
        "stacked_vs_packed": round(t_stacked / t_packed, 2),
    }
    figures["targets_met"] = {"packed_within_2x_of_first_token": figures["packed_vs_first_token"] <= 2.0}
    print(f"first-token step {t_first:.2f} s | packed shared-prefix step {t_packed:.2f} s "
          f"({figures['packed_vs_first_token']}x) | stacked {t_stacked:.2f} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
