"""Seven intents whose names share first tokens, served as the Hugging Face Hub serves a labelled set,
run with the README's defaults as a new user runs them.

    .venv/bin/python bench/intents.py [--per-intent 100]

The data: customer messages written from templates (seeded, so every run writes the same files),
--per-intent distinct texts for each of book_flight, book_hotel, cancel_booking, change_pin,
check_balance, report_lost_card and transfer_money, saved with `datasets` as Parquet shards with the
intent a `ClassLabel` (ids 0-6; the names sit in the files' schema metadata): data/train-00000-of-
00002.parquet, data/train-00001-of-00002.parquet and data/test-00000-of-00001.parquet (a fifth of
the texts), in bench/results/intents/hub/ (git-ignored).

The task is what the README's "To label your own inputs" says: a copy of prompts/sentiment whose
inputs.source is the glob `hub/data/train-*.parquet` (`fields: {text: utterance}`), whose eval.source
is `hub/data/test-*.parquet` with `gold_field` the intent (read as its class names: no gold_map), whose
`output.labels` are the seven intents, and whose question lists them. Nothing else changes: the demo's
teacher, calibration (and curate's overshoot guard), student, head, learning rate and early stopping.
Then `distill run <folder> --quiet` as a subprocess, into bench/results/intents/ (a rerun reads the
teacher's answers from that cache), and the figures of its report.json.

Targets (issue 10's done-when, "intents with shared prefixes"): agreement with the teacher >= 85%,
gap closed >= 90%, student >= 4x cheaper, each on at least 500 evaluated inputs (`evaluated_at_least_500`:
false here, so a quality target it meets is within noise). Prints a table, then ONE JSON line with every figure and a
`targets_met` map.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.unseen_data import REPO, demo_copy, run_task, save_config

INTENTS = ["book_flight", "book_hotel", "cancel_booking", "change_pin", "check_balance", "report_lost_card",
           "transfer_money"]
FRAMES = {
    "book_flight": ["I need a flight to {city} {day}", "book me a plane ticket to {city} {day}",
                    "can you get me on a flight from {city} {day}", "I want to fly to {city} {day}",
                    "find me the cheapest airfare to {city} {day}", "any seats on a plane to {city} {day}?"],
    "book_hotel": ["I need a room in {city} {day}", "book a hotel in {city} for {nights} nights",
                   "find me somewhere to stay in {city} {day}", "reserve a double room in {city} {day}",
                   "hotel near the station in {city} for {nights} nights", "any rooms free in {city} {day}?"],
    "cancel_booking": ["cancel my reservation for {day}", "I want to cancel the trip to {city}",
                       "please call off my booking {day}", "drop my {city} reservation",
                       "undo the booking I made for {city} {day}", "I can't travel {day}, cancel everything"],
    "change_pin": ["I want a new PIN for my {card}", "change my {card} pin {day}", "reset the PIN on my {card}",
                   "how do I update the pin number of my {card}", "my {card} PIN is compromised, change it",
                   "set a different PIN on the {card} {day}"],
    "check_balance": ["how much money is in my {account}", "what's the balance of my {account} {day}",
                      "show my {account} balance", "do I have enough in my {account} to pay {amount}",
                      "tell me what's left in the {account}", "is my {account} in the red {day}?"],
    "report_lost_card": ["I lost my {card} in {city}", "my {card} was stolen {day}", "I can't find my {card} anywhere",
                         "someone took my wallet with the {card} in {city}", "block my {card}, it's missing",
                         "my {card} disappeared {day}"],
    "transfer_money": ["send {amount} to {person}", "move {amount} to my {account} {day}",
                       "transfer {amount} to {person} {day}", "wire {amount} to {person} in {city}",
                       "pay {person} back {amount}", "put {amount} from my {account} into {person}'s"],
}
SLOTS = {
    "city": ["Paris", "Tokyo", "Boston", "Lagos", "Lima", "Oslo", "Delhi", "Cairo", "Denver", "Seoul", "Quito", "Rome"],
    "day": ["tomorrow", "next Friday", "on Monday", "this weekend", "in March", "tonight", "on the 14th", "next week"],
    "nights": ["two", "three", "four", "five"],
    "card": ["debit card", "credit card", "visa", "business card", "travel card"],
    "account": ["checking account", "savings", "joint account", "current account", "student account"],
    "amount": ["50 dollars", "$200", "30 bucks", "1,000 euros", "75 pounds", "$12.50"],
    "person": ["Anna", "my landlord", "Bob", "my sister", "Kenji", "the plumber", "Mum"],
}


def messages(per_intent: int, seed: int = 0) -> list[tuple[str, int]]:
    """``per_intent`` distinct (text, intent id) pairs per intent, in a shuffled order."""
    rng = random.Random(seed)
    rows = []
    for i, intent in enumerate(INTENTS):
        texts: set[str] = set()
        for _ in range(200 * per_intent):  # the frames of an intent can write only so many distinct texts
            if len(texts) == per_intent:
                break
            frame = rng.choice(FRAMES[intent])
            texts.add(frame.format(**{k: rng.choice(v) for k, v in SLOTS.items()}))
        if len(texts) < per_intent:
            raise SystemExit(f"--per-intent {per_intent}: the templates write only {len(texts)} distinct "
                             f"'{intent}' messages; ask for fewer")
        rows += [(t, i) for t in sorted(texts)]
    rng.shuffle(rows)
    return rows


def write_hub_files(hub: Path, per_intent: int) -> int:
    """The Parquet shards as the Hub serves them (ClassLabel in the schema); returns the row count."""
    from datasets import ClassLabel, Dataset, Features, Value

    rows = messages(per_intent)
    feats = Features({"utterance": Value("string"), "intent": ClassLabel(names=INTENTS)})
    test = len(rows) // 5
    shards = {"train-00000-of-00002": rows[test: test + (len(rows) - test) // 2],
              "train-00001-of-00002": rows[test + (len(rows) - test) // 2:], "test-00000-of-00001": rows[:test]}
    shutil.rmtree(hub, ignore_errors=True)
    (hub / "data").mkdir(parents=True)
    for name, part in shards.items():
        Dataset.from_list([{"utterance": t, "intent": i} for t, i in part], features=feats).to_parquet(
            str(hub / "data" / f"{name}.parquet"))
    return len(rows)


def build_task(out: Path) -> Path:
    """prompts/sentiment copied, pointed at the shards, its labels and question the intents'."""
    folder, cfg = demo_copy(out, "intents")
    cfg["description"] = "Name the intent of a bank or travel customer's message."
    hub = (out / "hub" / "data").resolve()
    cfg["inputs"]["source"] = {"path": str(hub / "train-*.parquet"), "fields": {"text": "utterance"}}
    cfg["eval"]["source"] = {"path": str(hub / "test-*.parquet"), "fields": {"text": "utterance", "gold": "intent"}}
    cfg["eval"].pop("gold_map", None)
    cfg["eval"].pop("limit", None)
    cfg["output"]["labels"] = INTENTS
    save_config(folder, cfg)
    (folder / "user.j2").write_text("Message: {{ text }}\nWhich is its intent: {{ labels[:-1] | join(', ') }} or "
                                    "{{ labels[-1] }}?", encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-intent", type=int, default=100, help="distinct messages per intent (a fifth for the eval)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "intents"))
    args = p.parse_args(argv)
    out = Path(args.out)
    rows = write_hub_files(out / "hub", args.per_intent)
    r = run_task(build_task(out), "intents", out, rows)
    gap = "n/a" if r["gap_closed"] is None else f"{r['gap_closed']:.1%}"
    print(f"intents: {rows} messages, {r['evaluated']} evaluated; majority {r['majority_baseline']:.1%}, teacher "
          f"{r['teacher_accuracy']:.1%}, student {r['student_accuracy']:.1%}; agreement {r['agreement']:.1%}, kappa "
          f"{r['kappa']:.2f}, gap closed {gap}, {r['cost_ratio']:.1f}x cheaper, {r['run_s']:.0f} s ({r['verdict']}); "
          f"calibration used: {r['calibration_used']}")
    # the done-when's figures are on at least 500 real inputs; the templates give at most 140 test
    # messages here (a share known to about +-8 points), so a met quality target is noise unless this is too
    targets = {"agreement_85pct": r["agreement"] >= 0.85,
               "gap_closed_90pct": r["gap_closed"] is not None and r["gap_closed"] >= 0.9,
               "4x_cheaper": r["cost_ratio"] >= 4, "evaluated_at_least_500": r["evaluated"] >= 500}
    print(json.dumps({"bench": "intents", "per_intent": args.per_intent, **r, "targets_met": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
