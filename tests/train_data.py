"""Tiny real training data for the train tests: TrainRows whose token logprobs come from a tiny
teacher model (its real top-k at each completion token, with the tiny tokenizer's ids), written as
a dataset version the way curate writes one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pipeline.records import Message, TokenLogprob, TokenPosition, TrainRow, write_jsonl

REVIEWS = [
    ("This movie was great and I loved the acting.", "positive"),
    ("A dull, boring film with a terrible plot.", "negative"),
    ("I loved the plot and the acting was great.", "positive"),
    ("A terrible, boring movie.", "negative"),
    ("Great film, loved it.", "positive"),
    ("The acting was dull and the plot terrible.", "negative"),
    ("I loved this great movie.", "positive"),
    ("Boring and terrible.", "negative"),
]
SYSTEM = "Classify the sentiment of the review. Answer with one word: positive or negative."


def prompt_for(text: str) -> list[Message]:
    return [Message(role="system", content=SYSTEM), Message(role="user", content=text)]


def teacher_rows(
    tokenizer_dir: Path, n: int = 8, *, with_ids: bool = True, seed: int = 0, p_positive: float | None = None
) -> list[TrainRow]:
    """Rows answered with the gold label. At each answer token a peaked teacher (as a real one is)
    gives the answer token 0.6 and four other real ids 0.15/0.1/0.06/0.04, leaving a 0.05 tail.
    Ids and token strings are the tiny tokenizer's; ``with_ids=False`` mimics an API teacher.
    The soft label is P(positive) = 0.8 / 0.25 by the gold label, or ``p_positive`` for every row."""
    import math
    import random

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        text, label = REVIEWS[i % len(REVIEWS)]
        positions = []
        for tid in tok(label, add_special_tokens=False)["input_ids"]:
            others = rng.sample([t for t in range(10, 400) if t != tid], 4)
            probs = [0.6, 0.15, 0.1, 0.06, 0.04]
            top = [
                TokenLogprob(token=tok.decode([t]), logprob=math.log(p), id=t if with_ids else None)
                for t, p in zip([tid, *others], probs)
            ]
            positions.append(TokenPosition(token=tok.decode([tid]), logprob=math.log(0.6), id=tid if with_ids else None,
                                           top=top))
        p_pos = p_positive if p_positive is not None else (0.8 if label == "positive" else 0.25)
        rows.append(
            TrainRow(
                id=f"row{i:03d}", prompt=prompt_for(text), completion=[Message(role="assistant", content=label)],
                label=label, soft_label={"positive": p_pos, "negative": 1 - p_pos}, soft_label_kind="logprobs",
                token_logprobs=positions, teacher_model="tiny-teacher", teacher_backend="hf" if with_ids else "openai",
            )
        )
    return rows


def write_version(data_root: Path, task: str, train: list[TrainRow], eval_rows: list[TrainRow] | None = None,
                  version: str = "20260101T000000Z") -> Path:
    vdir = data_root / "data" / task / "versions" / version
    write_jsonl(vdir / "train.jsonl", train)
    write_jsonl(vdir / "eval.jsonl", eval_rows or [])
    (vdir / "manifest.json").write_text(json.dumps({"stage": "curate", "task": task}), encoding="utf-8")
    (data_root / "data" / task / "latest").write_text(version + "\n", encoding="utf-8")
    return vdir


def make_task(dst: Path, repo: Path, *, student: dict, train: dict) -> Path:
    """A copy of the bundled sentiment task with its student: and train: sections replaced."""
    shutil.copytree(repo / "prompts" / "sentiment", dst)
    cfg = yaml.safe_load((dst / "task.yaml").read_text())
    cfg["student"] = student
    cfg["train"] = train
    (dst / "task.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return dst
