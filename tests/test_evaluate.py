"""The evaluate stage end to end on a tiny real student: report files, consistent numbers, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.config.task import load_task
from pipeline.errors import ConfigError, InputDataError
from pipeline.records import Message, Record, TeacherInfo, TrainRow, Usage, write_jsonl

LABELS = ["positive", "negative"]
REVIEWS = ["This movie was great and I loved the acting.", "A dull, boring film with a terrible plot.",
           "The acting was great.", "A terrible, boring plot.", "I loved this film.", "Dull and boring."]


def make_task(root: Path, name: str = "senti", *, eval_section: dict | None = None, teacher: dict | None = None,
              output: dict | None = None, user: str = "Review: {{ text }}\nSentiment:") -> Path:
    folder = root / "prompts" / name
    folder.mkdir(parents=True)
    (folder / "user.j2").write_text(user)
    (folder / "system.j2").write_text("Answer with one word: {{ labels | join(' or ') }}.")
    cfg = {
        "name": name,
        "teacher": teacher or {"backend": "openai", "model": "gpt-4o-mini", "params": {"temperature": 0, "max_tokens": 3}},
        "inputs": {"source": {"path": "inputs.jsonl"}},
        "output": output or {"kind": "label", "labels": LABELS},
        "eval": {"batch_size": 4, "latency_samples": 3, "student_price_per_hour": 0.36, **(eval_section or {})},
    }
    (folder / "inputs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in REVIEWS))
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def install_student(tiny_model_dir: Path, data_root: Path, task: str, version: str = "20260101T000000Z",
                    dataset_version: str | None = "20251231T000000Z") -> Path:
    """A trained student as the train stage leaves it: the model folder, its manifest, the pointer."""
    models = data_root / "models" / task
    dst = models / version
    shutil.copytree(tiny_model_dir, dst)
    (dst / "train_manifest.json").write_text(json.dumps(
        {"stage": "train", "task": task, "dataset_version": dataset_version, "method": "kd"}))
    (models / "latest").write_text(version)
    return dst


def write_held_out(data_root: Path, task_folder: Path, version: str = "20251231T000000Z") -> list[Record]:
    """A curated version's eval.jsonl plus the generation records it came from (latency 1-6 s)."""
    task = load_task(task_folder)
    from pipeline.prompts import PromptRenderer

    renderer = PromptRenderer.for_task(task)
    records, rows = [], []
    for i, text in enumerate(REVIEWS):
        messages = renderer.render({"text": text})
        label = LABELS[i % 2]
        rec = Record(id=f"{i:016x}", task=task.name, inputs={"text": text}, messages=messages, completion=label,
                     teacher=TeacherInfo(backend="openai", model="gpt-4o-mini"), latency_s=float(i + 1),
                     usage=Usage(prompt_tokens=1000, completion_tokens=100), request_hash=f"{i:064x}")
        records.append(rec)
        rows.append(TrainRow(id=rec.id, prompt=messages, completion=[Message(role="assistant", content=label)],
                             label=label))
    root = data_root / "data" / task.name
    write_jsonl(root / "versions" / version / "eval.jsonl", rows)
    write_jsonl(root / "generated" / "generated.jsonl", records)
    (root / "latest").write_text(version)
    return records


def test_held_out_report_files_exist_and_numbers_are_consistent(tmp_path, data_root, tiny_model_dir):
    folder = make_task(tmp_path)
    write_held_out(data_root, folder)
    model_dir = install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True)

    for name in ("report.md", "report.json", "quality_vs_cost.png", "coverage_vs_quality.png", "eval_predictions.jsonl"):
        assert (model_dir / name).stat().st_size > 0, name
    assert (model_dir / "quality_vs_cost.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((model_dir / "report.json").read_text())
    assert on_disk["quality"] == report["quality"]
    for key in ("stage", "task", "created_at", "config", "inputs", "params", "counts", "timings"):
        assert key in on_disk
    assert on_disk["params"]["dataset_version"] == "20251231T000000Z"
    assert on_disk["counts"]["inputs"] == 6 and on_disk["counts"]["teacher_new"] == 0

    # no gold: the reference is the teacher, whose quality is 100%; the student's is its agreement
    assert report["reference"] == "teacher" and report["quality"]["teacher"] == 1.0
    predictions = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    agree = sum(p["student_parsed"] == p["teacher_parsed"] for p in predictions) / 6
    assert report["quality"]["student"] == pytest.approx(agree)
    assert report["quality"]["student_pct_of_teacher"] == pytest.approx(100 * agree)
    # but the summary line (what `distill run --quiet` logs) gives no share of the teacher's quality
    # when the teacher's margin over the majority answer is within chance, as it is on these 6 inputs
    assert report["headline"]["verdict"] == "teacher_margin_within_chance"
    assert report["summary"]["quality_pct_of_teacher"] is None

    # teacher latency from the generation records (1..6 s); cost from the price table: gpt-4o-mini
    # at $0.15 / $0.60 per 1M tokens x (1000 in, 100 out) = $0.00021 per request
    assert report["latency"]["teacher"]["p50_s"] == pytest.approx(3.5)
    assert report["cost_per_1000"]["teacher_usd"] == pytest.approx(0.21)
    # student: measured machine seconds per request x $0.36/h
    lat = report["latency"]["student"]
    assert lat["n"] == 3 and 0 < lat["p50_s"] <= lat["p95_s"]
    assert report["throughput"]["student_rps"] > 0
    assert report["cost_per_1000"]["student_usd"] > 0

    # routing: the curve ends at full coverage with the student's overall quality; the threshold is
    # chosen on one half of the inputs and its figures measured on the other
    r = report["routing"]
    assert r["curve"][-1]["coverage"] == 1.0
    assert r["curve"][-1]["student_quality"] == pytest.approx(report["quality"]["student"])
    assert all(0 <= p["threshold"] <= 1 for p in r["curve"])  # a probability for label tasks
    assert r["chosen_on"] + r["reported_on"] == report["counts"]["scored"]
    # routing runs the student on every request (its label scores are its confidence), the teacher on the rest
    cost = report["cost_per_1000"]
    assert cost["student_with_confidence_usd"] >= cost["student_usd"]
    expected = (cost["teacher_usd"] if r["threshold"] is None
                else cost["student_with_confidence_usd"] + (1 - r["coverage"]) * cost["teacher_usd"])
    assert r["routed_cost_per_1000_usd"] == pytest.approx(expected)
    md = (model_dir / "report.md").read_text()
    assert "## Routing" in md and "$0.2100" in md
    # per label: the teacher's and the student's answers counted from the same predictions
    per = {r["label"]: r for r in report["per_label"]}
    for label, r in per.items():
        assert r["teacher"] == sum(p["teacher_parsed"] == label for p in predictions)
        assert r["student"] == sum(p["student_parsed"] == label for p in predictions)
    assert "## Per label" in md and "| positive |" in md


def test_unknown_teacher_price_is_reported_as_unknown_not_zero(tmp_path, data_root, tiny_model_dir):
    folder = make_task(tmp_path, teacher={"backend": "openai", "model": "my-private-model", "params": {"max_tokens": 3}})
    write_held_out(data_root, folder)
    model_dir = install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True, limit=2)
    assert report["counts"]["inputs"] == 2
    assert report["cost_per_1000"]["teacher_usd"] is None
    assert "unknown" in report["cost_per_1000"]["teacher_basis"]
    assert "| cost / 1,000 requests |" in (model_dir / "report.md").read_text()
    assert "| unknown |" in (model_dir / "report.md").read_text()


def test_missing_student_is_a_one_line_error_naming_the_fix(tmp_path, data_root):
    folder = make_task(tmp_path)
    from pipeline.stages.evaluate import run_evaluate

    with pytest.raises(ConfigError, match="distill train senti"):
        run_evaluate(load_task(folder), quiet=True)
    with pytest.raises(ConfigError, match="--model"):
        run_evaluate(load_task(folder), quiet=True, model=tmp_path / "nowhere")


def test_gold_value_outside_the_label_set_names_the_row_and_gold_map(tmp_path, data_root, tiny_model_dir):
    folder = make_task(tmp_path, eval_section={
        "source": {"path": "real.csv", "fields": {"text": "text", "gold": "category"}},
        "gold_field": "gold", "gold_map": {"fresh": "positive", "rotten": "negative"}})
    (folder / "real.csv").write_text("text,category\nGreat fun.,fresh\nMeh.,stale\n")
    install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    with pytest.raises(InputDataError, match=r"real.csv: input 2: gold value 'stale'.*eval.gold_map"):
        run_evaluate(load_task(folder), quiet=True)


def test_class_label_ids_of_a_saved_hf_dataset_are_read_as_their_names(tmp_path, data_root):
    """A labelled set from ``datasets`` stores its gold column as a ClassLabel (ids 0, 1, ...); saved
    with save_to_disk and used as eval.source, the ids are read as the class names, a gold_map entry
    still wins, and a name outside output.labels is an error that shows the id and the name."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from pipeline.evaluation.eval_inputs import read_eval_source
    from pipeline.stages.validate import validate_task

    feats = Features({"sentence": Value("string"), "label": ClassLabel(names=["negative", "positive", "neutral"])})
    DatasetDict({"test": Dataset.from_dict({"sentence": ["Great fun.", "Dull.", "Fine."], "label": [1, 0, 2]},
                                           features=feats)}).save_to_disk(str(tmp_path / "sst"))
    source = {"path": str(tmp_path / "sst"), "split": "test", "fields": {"text": "sentence", "gold": "label"}}
    folder = make_task(tmp_path, eval_section={"source": source, "gold_field": "gold", "gold_map": {2: "positive"}})
    rows, golds, _ = read_eval_source(load_task(folder), None)
    assert golds == ["positive", "negative", "positive"] and rows[0] == {"text": "Great fun."}
    shutil.rmtree(folder.parent)
    folder = make_task(tmp_path, eval_section={"source": {**source, "where": {"label": ["negative", "positive"]}},
                                               "gold_field": "gold"})
    assert read_eval_source(load_task(folder), None)[1] == ["positive", "negative"]  # `where` by class name
    shutil.rmtree(folder.parent)
    folder = make_task(tmp_path, eval_section={"source": source, "gold_field": "gold"})
    with pytest.raises(InputDataError, match=r"sst: input 3: gold value 2 \('neutral'\) is none of the labels"):
        read_eval_source(load_task(folder), None)
    report = validate_task(folder)
    assert any("1 of 3 gold values" in p and "(e.g. 2, the class 'neutral', in row 3)" in p for p in report.problems)


def test_cli_writes_the_report_and_prints_a_summary(tmp_path, data_root, tiny_model_dir, capsys):
    folder = make_task(tmp_path)
    write_held_out(data_root, folder)
    model_dir = install_student(tiny_model_dir, data_root, "senti")
    from pipeline.cli import main

    assert main(["evaluate", str(folder), "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "student vs teacher" in out and "Report:" in out
    assert json.loads((model_dir / "report.json").read_text())["counts"]["inputs"] == 4
    assert main(["evaluate", str(folder), "--limit", "0"]) == 2


def _teacher_says_positive_for_praise(body: dict) -> str:
    """A deterministic teacher for the fake server: praise words -> positive."""
    last = body["messages"][-1]["content"]
    return "positive" if ("great" in last or "loved" in last) else "negative"


def test_real_inputs_with_gold_through_the_cache_pay_each_teacher_answer_once(
        tmp_path, data_root, tiny_model_dir, monkeypatch):
    from tests.fakes.server import FakeServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-evaluate-0000")
    csv = ("text,category\n"
           '"This movie was great and I loved the acting.",fresh\n'
           '"A dull, boring film with a terrible plot.",rotten\n'
           '"The acting was great.",rotten\n'          # the teacher gets this one wrong
           '"A terrible, boring plot.",rotten\n'
           '"Ignore me.",certified\n')                  # filtered out by eval.source.where
    with FakeServer(latency_s=0.01, reply=_teacher_says_positive_for_praise) as srv:
        folder = make_task(tmp_path, teacher={
            "backend": "openai", "model": "gpt-4o-mini", "base_url": srv.url, "max_retries": 0,
            "params": {"temperature": 0, "max_tokens": 3}}, eval_section={
            "source": {"path": "real.csv", "fields": {"text": "text", "gold": "category"},
                       "where": {"category": ["fresh", "rotten"]}},
            "gold_field": "gold", "gold_map": {"fresh": "positive", "rotten": "negative"}})
        (folder / "real.csv").write_text(csv)
        model_dir = install_student(tiny_model_dir, data_root, "senti", dataset_version=None)
        from pipeline.stages.evaluate import run_evaluate

        first = run_evaluate(load_task(folder), quiet=True)
        paid = srv.stats()["n_served"]
        second = run_evaluate(load_task(folder), quiet=True)
        assert srv.stats()["n_served"] == paid == 4  # the second evaluation bought nothing

    assert first["counts"]["teacher_new"] == 4 and second["counts"]["teacher_cached"] == 4
    assert second["reference"] == "gold" and second["quality"]["metric"] == "accuracy"
    assert second["quality"]["teacher"] == pytest.approx(3 / 4)
    assert second["metrics"]["teacher"]["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in preds] == ["positive", "negative", "negative", "negative"]
    assert "gold" not in preds[0]["inputs"]  # the gold answer never reaches the prompt
    student_acc = sum(p["student_parsed"] == p["gold"] for p in preds) / 4
    assert second["quality"]["student"] == pytest.approx(student_acc)
    assert second["latency"]["teacher"]["n"] == 4 and second["latency"]["teacher"]["p50_s"] >= 0.01


def test_local_text_teacher_is_priced_by_recorded_machine_time_per_request(tmp_path, data_root, tiny_model_dir):
    local = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2, "params": {"max_tokens": 3}}
    folder = make_task(tmp_path, teacher=local, output={"kind": "text"}, eval_section={"teacher_price_per_hour": 3.6})
    write_held_out(data_root, folder)  # recorded latencies 1..6 s, each the time of a batch of 2
    install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True, limit=2)
    # records 1 s and 2 s: mean 1.5 s per batch / 2 = 0.75 s per request; x $3.6/h = $0.00075 per request
    assert report["cost_per_1000"]["teacher_usd"] == pytest.approx(0.75)
    assert "batch" in report["latency"]["teacher"]["source"]


def test_local_label_teacher_is_timed_like_the_student(tmp_path, data_root, tiny_model_dir_4layers):
    """A scoring teacher (hf, label task) is timed with the student's procedure, batch size and
    machine; the report's cost ratio and both latencies then compare like for like."""
    local = {"backend": "hf", "model": str(tiny_model_dir_4layers), "batch_size": 2}
    folder = make_task(tmp_path, teacher=local, eval_section={"teacher_price_per_hour": 3.6,
                                                              "student_price_per_hour": 3.6, "batch_size": 2})
    write_held_out(data_root, folder)
    install_student(tiny_model_dir_4layers, data_root, "senti")  # the same model: the same cost
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True, limit=4)
    cost = report["cost_per_1000"]
    assert "timed like the student (batch size 2, 4 requests, batch by batch interleaved" in cost["teacher_basis"]
    assert "on the teacher's 4 timed requests, interleaved: its time over the median ratio of 2 paired batches" in (
        cost["student_basis"])
    assert report["latency"]["teacher"]["source"] == "one request at a time, timed like the student"
    assert report["throughput"]["teacher_rps"] > 0 and report["summary"]["cost_ratio"] is not None
    assert cost["teacher_usd"] > 0 and cost["student_usd"] > 0
    # both costs and both throughputs come from the same interleaved timing: they divide to the ratio
    rps = report["throughput"]
    assert cost["teacher_usd"] / cost["student_usd"] == pytest.approx(rps["student_rps"] / rps["teacher_rps"])
    assert cost["teacher_usd"] / cost["student_usd"] == pytest.approx(cost["paired_timing"]["paired_ratio"])
    assert cost["paired_timing"]["paired_batches"] == 2 and cost["paired_timing"]["ratio_of_sums"] > 0


def test_text_task_routes_on_mean_token_logprob_and_scores_rouge_l(tmp_path, data_root, tiny_model_dir):
    folder = make_task(tmp_path, output={"kind": "text"}, user="Summarize: {{ text }}")
    write_held_out(data_root, folder)  # the teacher's "summaries" are the words positive / negative
    model_dir = install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True, limit=4)
    assert report["quality"]["metric"] == "rouge_l" and report["reference"] == "teacher"
    assert report["routing"]["confidence"] == "mean token logprob"
    assert all(p["threshold"] <= 0 for p in report["routing"]["curve"])  # log-probabilities
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    from pipeline.evaluation.metrics import rouge_l

    expected = sum(rouge_l(p["student"] or None, p["teacher"]) for p in preds) / 4
    assert report["quality"]["student"] == pytest.approx(expected)
    assert report["per_label"] is None and "## Per label" not in (model_dir / "report.md").read_text()


def test_label_scores_in_a_padded_batch_equal_one_unpadded_forward_each(tiny_model_dir):
    import torch

    from pipeline.evaluation.student import (
        _prompt_texts,
        _stop_token_id,
        encode,
        load_student,
        score_label_strings,
    )

    model, tok = load_student(tiny_model_dir)
    texts = _prompt_texts(tok, [[Message(role="user", content="hi")],
                                [Message(role="user", content="a much longer review of the movie with many words")]])
    labels = ["positive", "negative", "great movie"]  # labels of different token lengths
    got = score_label_strings(model, tok, encode(tok, texts), labels)
    stop = _stop_token_id(model, tok)
    for text, scores in zip(texts, got):
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        for label in labels:
            ids = prompt + tok(label, add_special_tokens=False)["input_ids"] + [stop]
            with torch.inference_mode():
                lp = model(input_ids=torch.tensor([ids])).logits.log_softmax(-1)[0]
            expected = sum(lp[t - 1, ids[t]].item() for t in range(len(prompt), len(ids)))
            assert scores[label] == pytest.approx(expected, abs=1e-4)


def test_answers_from_the_shared_prompt_cache_equal_plain_generation(tiny_model_dir):
    from pipeline.evaluation.student import _prompt_texts, encode, generate_batch, load_student, prefix_cache

    model, tok = load_student(tiny_model_dir)
    texts = _prompt_texts(tok, [[Message(role="user", content="hi")],
                                [Message(role="user", content="a much longer review of the movie with many words")]])
    enc = encode(tok, texts)
    plain = generate_batch(model, tok, enc, 4)
    shared = generate_batch(model, tok, enc, 4, cache=prefix_cache(model, enc))
    assert shared[0] == plain[0]
    for a, b in zip(shared[1], plain[1]):
        assert a == pytest.approx(b, abs=1e-4)


def test_json_task_reports_validity_and_field_exact_match(tmp_path, data_root, tiny_model_dir):
    schema = {"type": "object", "required": ["label"], "properties": {"label": {"enum": LABELS}}}
    folder = make_task(tmp_path, output={"kind": "json", "json_schema": schema})
    records = write_held_out(data_root, folder)
    # make the teacher's held-out answers JSON objects
    eval_path = next((data_root / "data" / "senti" / "versions").glob("*/eval.jsonl"))
    rows = [json.loads(line) for line in eval_path.read_text().splitlines()]
    for row, rec in zip(rows, records):
        row["completion"][0]["content"] = json.dumps({"label": rec.completion})
    eval_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    install_student(tiny_model_dir, data_root, "senti")
    from pipeline.stages.evaluate import run_evaluate

    report = run_evaluate(load_task(folder), quiet=True, limit=3)
    assert report["quality"]["metric"] == "field_exact_match"
    assert report["metrics"]["teacher"]["json_valid"] == 1.0
    assert report["metrics"]["student"]["json_valid"] == pytest.approx(1 - report["metrics"]["student"]["unparsed_rate"])
    assert report["routing"]["confidence"] == "mean token logprob"


def test_label_student_answers_with_its_most_probable_label_unless_generated_is_asked(tmp_path, data_root, tiny_model_dir):
    """A random tiny student generates gibberish; served as a classifier it still picks a label."""
    from pipeline.stages.evaluate import run_evaluate

    folder = make_task(tmp_path)
    write_held_out(data_root, folder)
    model_dir = install_student(tiny_model_dir, data_root, "senti")
    run_evaluate(load_task(folder), quiet=True)
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert all(p["student_parsed"] in ("positive", "negative") for p in preds)

    cfg = yaml.safe_load((folder / "task.yaml").read_text())
    cfg.setdefault("eval", {})["label_answer"] = "generated"
    (folder / "task.yaml").write_text(yaml.safe_dump(cfg))
    run_evaluate(load_task(folder), quiet=True)
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert any(p["student_parsed"] is None for p in preds)  # the raw text of a random model rarely parses


def test_eval_limit_samples_across_a_grouped_file_deterministically(tmp_path):
    from pipeline.evaluation.eval_inputs import read_eval_source

    folder = make_task(tmp_path, eval_section={"source": {"path": "real.csv"}, "gold_field": "label"})
    rows = [("positive", f"great film number {i}") for i in range(50)] + [("negative", f"awful film {i}") for i in range(50)]
    (folder / "real.csv").write_text("label,text\n" + "".join(f"{lab},{t}\n" for lab, t in rows))
    inputs, golds, _ = read_eval_source(load_task(folder), 20)
    assert len(inputs) == 20 and set(golds) == {"positive", "negative"}  # not just the first 20 rows
    assert read_eval_source(load_task(folder), 20)[0] == inputs


def gold_labelled_task(tmp_path: Path, data_root: Path, tiny_model_dir: Path, calibrate: str) -> Path:
    """A label task with a scoring (hf) teacher, gold-labelled real inputs in eval.source, and a
    generated transfer set of 20 scored answers that lean positive."""
    from tests.curate_fixtures import make_record, write_generated

    local = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 2}
    folder = make_task(tmp_path, teacher=local, output={"kind": "label", "labels": LABELS, "calibrate": calibrate},
                       eval_section={"source": {"path": "real.csv", "fields": {"text": "text", "gold": "category"}},
                                     "gold_field": "gold", "gold_map": {"fresh": "positive", "rotten": "negative"}})
    (folder / "real.csv").write_text("text,category\n" + "".join(
        f'"{t}",{"fresh" if i % 2 == 0 else "rotten"}\n' for i, t in enumerate(REVIEWS)))
    transfer = []
    for i in range(20):
        record = make_record(f"transfer review {i}", "positive", salt=str(i))
        record.label_logprobs = {"positive": -0.1 - 0.05 * i, "negative": -2.0 + 0.05 * i}
        transfer.append(record)
    write_generated(data_root / "data", "senti", transfer)
    return folder


def test_gold_labelled_inputs_get_a_calibration_check_in_the_report(tmp_path, data_root, tiny_model_dir, monkeypatch,
                                                                     capsys):
    """A scoring teacher (hf) on gold-labelled real inputs: the report holds the teacher's accuracy
    under every calibration this run can compute, and the markdown names a clearly better one."""
    from pipeline.evaluation.calibration_check import calibration_sentence
    from pipeline.stages.evaluate import run_evaluate

    folder = gold_labelled_task(tmp_path, data_root, tiny_model_dir, "prior")
    model_dir = install_student(tiny_model_dir, data_root, "senti", dataset_version=None)

    report = run_evaluate(load_task(folder), quiet=True)
    check = report["teacher_calibration"]
    assert check["n"] == len(REVIEWS) and check["configured"] == "prior"
    assert set(check["accuracy"]) == {"none", "prior"}  # no content-free answers in this run
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    # no dataset version, so evaluate judged the teacher uncalibrated: the check's 'none'
    assert check["accuracy"]["none"] == pytest.approx(sum(p["teacher_parsed"] == p["gold"] for p in preds) / len(preds))
    saved = json.loads((model_dir / "report.json").read_text())
    assert saved["teacher_calibration"] == check
    markdown = (model_dir / "report.md").read_text()
    if check["suggest"] or check["no_margin"]:
        assert calibration_sentence(check) in markdown
    else:
        assert calibration_sentence(check) is None and "Calibration:" not in markdown
    # a clearly better method reaches the report and the printed summary
    import pipeline.evaluation.calibration_check as cc

    forced = {**check, "suggest": "none", "no_margin": False, "accuracy": {"none": 0.9, "prior": 0.5}}
    monkeypatch.setattr(cc, "compare_calibrations", lambda *a, **k: forced)
    run_evaluate(load_task(folder))
    assert calibration_sentence(forced) in (model_dir / "report.md").read_text()
    assert "set output.calibrate: none" in " ".join(capsys.readouterr().out.split())


def test_a_calibration_fallback_reaches_the_report_and_the_check_compares_against_it(tmp_path, data_root,
                                                                                      tiny_model_dir, capsys):
    """curate's overshoot guard built the dataset with 'prior' where task.yaml says content_free: the
    teacher is judged with the dataset's weights, the report says why, and the calibration check
    treats 'prior' as the method in use."""
    from pipeline.evaluation.calibration_check import fallback_sentence
    from pipeline.stages.evaluate import run_evaluate

    folder = gold_labelled_task(tmp_path, data_root, tiny_model_dir, "content_free")
    vdir = data_root / "data" / "senti" / "versions" / "20251231T000000Z"
    vdir.mkdir(parents=True)
    used = {"method": "prior", "weights": {"positive": 1.0, "negative": 1e6}, "configured": "content_free",
            "overshoot": {"label": "negative", "share": 0.9, "prior_share": 0.3}}
    (vdir / "manifest.json").write_text(json.dumps({"calibration": used}))
    model_dir = install_student(tiny_model_dir, data_root, "senti")

    report = run_evaluate(load_task(folder))
    assert report["calibration_fallback"] == {k: used[k] for k in ("configured", "method", "overshoot")}
    assert report["teacher_calibration"]["configured"] == "prior"
    preds = [json.loads(line) for line in (model_dir / "eval_predictions.jsonl").read_text().splitlines()]
    assert {p["teacher_parsed"] for p in preds} == {"negative"}  # the dataset's weights, not content_free's
    sentence = fallback_sentence(report["calibration_fallback"])
    assert "output.calibrate 'content_free' made 'negative' the teacher's answer for 90%" in sentence
    assert sentence in (model_dir / "report.md").read_text()
    assert sentence in " ".join(capsys.readouterr().out.split())
