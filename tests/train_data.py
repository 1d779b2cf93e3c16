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


def teacher_rows(teacher_dir: Path, n: int = 8, k: int = 5, *, with_ids: bool = True) -> list[TrainRow]:
    """Rows answered with the gold label, carrying the teacher's real top-k at each answer token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import encode_prompt_completion

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    rows = []
    for i in range(n):
        text, label = REVIEWS[i % len(REVIEWS)]
        prompt = prompt_for(text)
        completion = [Message(role="assistant", content=label)]
        ids, start = encode_prompt_completion(tok, prompt, completion)
        answer_ids = tok(label, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        positions = []
        for j, tid in enumerate(answer_ids):
            dist = logp[start + j - 1]
            top_lp, top_ids = dist.topk(k)
            top = [
                TokenLogprob(token=tok.decode([int(t)]), logprob=float(v), id=int(t) if with_ids else None)
                for v, t in zip(top_lp, top_ids)
            ]
            positions.append(
                TokenPosition(token=tok.decode([tid]), logprob=float(dist[tid]), id=tid if with_ids else None, top=top)
            )
        p_pos = 0.8 if label == "positive" else 0.25
        rows.append(
            TrainRow(
                id=f"row{i:03d}", prompt=prompt, completion=completion, label=label,
                soft_label={"positive": p_pos, "negative": 1 - p_pos}, soft_label_kind="logprobs",
                token_logprobs=positions, teacher_model=str(teacher_dir), teacher_backend="hf",
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
