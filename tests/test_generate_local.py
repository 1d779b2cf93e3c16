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


def test_a_trial_times_the_local_teacher_and_preview_then_says_how_long_the_run_will_take(tmp_path, data_root,
                                                                                          tiny_model_dir, capsys):
    """A local teacher has no per-token price: what a run costs is its time. A --limit trial measures
    it (each answer carries its batch's compute time, the model's load not counted), and preview
    multiplies the pace by the requests not answered yet."""
    from pipeline.cli import main as cli_main
    from pipeline.stages.preview import local_pace
    from tests.fakes.tasks import texts

    folder = make_task(tmp_path, teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4,
                                          "params": {"temperature": 0.0, "max_tokens": 3}}, inputs=texts(10))
    assert cli_main(["preview", str(folder), "-n", "0"]) == 0
    assert "time: not measured yet; `distill generate faketask --limit 32`" in capsys.readouterr().out
    assert cli_main(["generate", str(folder), "--limit", "6"]) == 0
    records = list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))
    batches = sorted({r.latency_s for r in records})
    assert len(records) == 6 and len(batches) == 2  # a batch of 4, then one of 2
    pace = local_pace(load_task(folder))
    assert pace.answers == 6 and abs(pace.seconds_per_request - sum(batches) / 6) < 1e-12
    assert "time: about" in capsys.readouterr().err.replace("\n", " ")
    assert cli_main(["preview", str(folder), "-n", "0"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "for the 4 requests not answered yet" in out and "measured on 6 answers on this machine" in out
    assert "requests: 10 (6 answered already, served by the cache; 4 to ask)" in out


def test_a_trial_still_times_the_run_when_eval_source_has_a_problem(tmp_path, data_root, tiny_model_dir, capsys):
    """The trial's time line estimates evaluate's requests from eval.source; a problem there (a row
    without its gold field) is validate's and evaluate's to name: the trial ends well, its answers kept."""
    from pipeline.cli import main as cli_main
    from tests.fakes.tasks import texts

    folder = make_task(tmp_path, teacher={"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4,
                                          "params": {"temperature": 0.0, "max_tokens": 3}}, inputs=texts(6),
                       extra={"eval": {"source": {"path": "eval.jsonl"}, "gold_field": "gold"}},
                       files={"eval.jsonl": '{"text": "held out", "gold": "x"}\n{"text": "no gold here"}\n'})
    assert cli_main(["generate", str(folder), "--limit", "2"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "for the 4 requests not answered yet" in err and "evaluate's" not in err
    assert len(list(read_jsonl(TaskPaths("faketask").generated_jsonl, Record))) == 2
