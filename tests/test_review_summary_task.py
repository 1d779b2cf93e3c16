"""The shipped text task, prompts/review_summary, end to end with token-level KD: generate with the
in-process teacher, curate, train a from_teacher_layers student. The embedded SmolLM2 is swapped for a
tiny 4-layer Llama (its own tokenizer, shared by teacher and student as SmolLM2's is), so the task's
own templates, inputs, filters and settings are what runs.

The tiny teacher is first taught one answer. A random model writes byte-level gibberish (invalid
UTF-8, merges no tokenizer would choose) whose ids cannot re-tokenize to its own text, so token-level
KD would rightly refuse it; a real teacher writes text, and so does this one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import load_task
from pipeline.paths import TaskPaths
from pipeline.stages.curate import run_curate
from pipeline.stages.generate import run_generate
from pipeline.stages.train import run_train
from tests.conftest import REPO

ANSWER = "A dull film with a terrible plot."


@pytest.fixture(scope="module")
def one_answer_teacher(tmp_path_factory, tiny_model_dir_4layers) -> Path:
    """The tiny 4-layer model after 40 steps on the task's prompts, each answered with ANSWER."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir_4layers)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir_4layers)
    folder = REPO / "prompts" / "review_summary"
    system = (folder / "system.j2").read_text().strip()
    texts = [json.loads(line)["text"] for line in (folder / "inputs.jsonl").read_text().splitlines()[:6]]
    rows = []
    for text in texts:
        prompt = [{"role": "system", "content": system},
                  {"role": "user", "content": f"Review: {text}\n\nSum up this review in a few words."}]
        start = len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)["input_ids"])
        ids = tok.apply_chat_template(prompt + [{"role": "assistant", "content": ANSWER}], tokenize=True)["input_ids"]
        # The tiny tokenizer spells unseen words letter by letter (~300 ids a prompt); the prompt's
        # last 24 ids (its closing words and the assistant header) are enough context to learn from.
        cut = max(start - 24, 0)
        rows.append((ids[cut:], start - cut))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([[t if start <= i < len(ids) else -100 for i, t in enumerate(ids + [0] * (width - len(ids)))]
                           for ids, start in rows])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        # Right padding under a causal mask changes no earlier position, so no attention mask is
        # needed, and without one the attention takes its fast path (~6x here).
        model(input_ids=input_ids, labels=labels).loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("one_answer") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_review_summary_generates_curates_and_trains_with_token_level_kd(task_copy, data_root, one_answer_teacher):
    folder = task_copy("review_summary")
    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    assert cfg["teacher"]["model"] == cfg["student"]["teacher_model"] == "smollm2-135m-instruct"
    assert cfg["output"]["kind"] == "text" and cfg["train"]["kd_level"] == "token"
    assert 48 <= cfg["teacher"]["params"]["max_tokens"] <= 64  # a summary fits (a cut one is dropped); cheap on a CPU
    cfg["teacher"]["model"] = cfg["student"]["teacher_model"] = str(one_answer_teacher)
    cfg["student"]["layer_map"] = [0, 3]
    cfg["train"]["sft"].update(max_steps=2, per_device_train_batch_size=4, save_strategy="no", logging_steps=1)
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    task = load_task(folder)

    generated = run_generate(task, quiet=True)
    assert generated["counts"]["records"] == 40
    curated = run_curate(task, quiet=True)
    assert curated["counts"]["train"] > 0
    rows = [json.loads(line) for line in (TaskPaths(task.name).versions_dir / curated["version"] / "train.jsonl").read_text().splitlines()]
    assert rows[0]["completion"][0]["content"] == ANSWER and len(rows[0]["token_logprobs"][0]["top"]) == 20
    trained = run_train(task, quiet=True)

    manifest = json.loads((Path(trained["output_dir"]) / "train_manifest.json").read_text())
    assert manifest["method"] == "kd" and manifest["kd_level"] == "token"
    assert manifest["student"]["init"] == "from_teacher_layers" and manifest["student"]["layer_map"] == [0, 3]
    counts = manifest["counts"]["train"]
    assert counts["kd_positions"] > 0 and counts["kd_rows"] == counts["rows"] and counts["kd_misaligned_rows"] == 0
    assert manifest["temperature"] == 1.0
