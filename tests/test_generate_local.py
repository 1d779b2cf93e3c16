"""The generate stage on the in-process hf backend with a tiny random model: both passes
(teacher-written inputs, then answers) go through the executor's batched path."""
from __future__ import annotations

from pipeline.config import load_task
from pipeline.paths import TaskPaths
from pipeline.records import Record, read_jsonl
from pipeline.stages.generate import run_generate
from tests.fakes.tasks import make_task


def test_hf_teacher_writes_inputs_then_answers_them_with_token_ids_and_top_logprobs(tmp_path, data_root,
                                                                                   tiny_model_dir):
    generate = {"template": "generate_input.j2", "field": "text", "count": 5,
                "seeds": {"genre": ["comedy", "drama"]}, "params": {"temperature": 1.0, "max_tokens": 6, "seed": 1}}
    folder = make_task(tmp_path, teacher={"backend": "hf", "model": str(tiny_model_dir), "top_logprobs": 3,
                                          "batch_size": 4, "params": {"temperature": 0.0, "max_tokens": 3}},
                       extra={"inputs": {"generate": generate}},
                       files={"generate_input.j2": "Write a short review of a {{ genre }}."})
    manifest = run_generate(load_task(folder), quiet=True)
    records = list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))
    assert manifest["passes"]["writing inputs"]["new_answers"] == 5
    assert 1 <= len(records) <= 5 and manifest["counts"]["records"] == len(records)
    rec = records[0]
    assert rec.teacher.backend == "hf" and rec.cost_usd == 0.0 and manifest["cost_usd"] == 0.0
    assert rec.logprobs and all(p.id is not None and len(p.top) == 3 for p in rec.logprobs)
    again = run_generate(load_task(folder), quiet=True)
    assert again["counts"]["requests_sent"] == 0 and again["counts"]["cached"] == len(records)
