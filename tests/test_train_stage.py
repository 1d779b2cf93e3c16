"""`distill train` end to end on tiny random models: SFT, token-level KD, label-level KD from a
teacher with another tokenizer, outputs, resume, LoRA, and the errors a user can cause."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pipeline.config.task import load_task
from pipeline.errors import ConfigError
from pipeline.stages.train import run_train
from tests.conftest import REPO
from tests.train_data import make_task, teacher_rows, write_version

FAST = {"per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "max_length": 128,
        "save_strategy": "no", "seed": 0}


@pytest.fixture
def version(data_root, tiny_model_dir):
    rows = teacher_rows(tiny_model_dir, n=8)
    return write_version(data_root, "sentiment", rows, rows[:4])


def _task(data_root, tiny_model_dir, **train):
    sft = {**FAST, **train.pop("sft", {})}
    return load_task(make_task(data_root / "prompts" / "sentiment", REPO,
                               student={"init": "pretrained", "model": str(tiny_model_dir)},
                               train={"sft": sft, **train}))


def _losses(manifest):
    hist = json.loads((Path(manifest["output_dir"]) / "metrics.json").read_text())["log_history"]
    return [h["loss"] for h in hist if "loss" in h]


def _token_kl(model_dir: Path, tokenizer_dir: Path, rows) -> float:
    """Mean sparse KL(teacher || student) at T=1 over the rows' answer tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import encode_rows
    from pipeline.training.kd_loss import sparse_topk_kl

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    enc = encode_rows(list(enumerate(rows)), tok, kd_level="token", labels=None, max_length=None)
    total, n = 0.0, 0
    with torch.no_grad():
        for item in enc.rows:
            logits = model(torch.tensor([item["input_ids"]])).logits[0]
            for p, ids, lps in zip(item["kd_pos"], item["kd_ids"], item["kd_logprobs"]):
                kl = sparse_topk_kl(logits[p - 1 : p], torch.tensor([ids]), torch.tensor([lps]),
                                    torch.ones(1, len(ids), dtype=torch.bool), 1.0)
                total, n = total + kl.item(), n + 1
    return total / n


def _label_kl(model_dir: Path, rows) -> float:
    """Mean KL(teacher || student) over the label set, the student's label log-probs read at the
    answer's first position (the labels begin with different tokens)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import encode_prompt_completion, encode_rows, label_completions
    from pipeline.training.label_kd import label_kl

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    labels = ["positive", "negative"]
    indexed = list(enumerate(rows))
    enc = encode_rows(indexed, tok, kd_level="label", labels=labels, max_length=None)
    firsts = [ids[0] for ids in label_completions(tok, indexed, labels)]
    kls = []
    with torch.no_grad():
        for row, item in zip(rows, enc.rows):
            ids, start = encode_prompt_completion(tok, row.prompt, row.completion)
            lp = torch.log_softmax(model(torch.tensor([ids[:start]])).logits[0, -1], -1)[firsts]
            kls.append(label_kl(lp[None], torch.tensor([item["label_probs"]]), 1.0).item())
    return sum(kls) / len(kls)


def test_sft_loss_decreases_and_outputs_name_the_dataset_version(data_root, tiny_model_dir, version):
    task = _task(data_root, tiny_model_dir, method="sft", sft={"max_steps": 8})
    m = run_train(task, quiet=True)
    losses = _losses(m)
    assert losses[-1] < losses[0] * 0.8
    out = Path(m["output_dir"])
    assert (data_root / "models" / "sentiment" / "latest").read_text().strip() == out.name
    manifest = json.loads((out / "train_manifest.json").read_text())
    assert manifest["dataset_version"] == version.name and manifest["method"] == "sft"
    assert manifest["stage"] == "train" and str(version / "train.jsonl") in manifest["inputs"]
    assert manifest["student"]["init"] == "pretrained"
    assert (out / "chat_template.jinja").exists() or "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert json.loads((out / "training_args.json").read_text())["bf16"] is False  # CPU-safe default
    assert json.loads((out / "training_args.json").read_text())["max_steps"] == 8
    assert "train_loss" in json.loads((out / "metrics.json").read_text())["final"]


def test_token_kd_loss_decreases_and_student_moves_toward_teacher(data_root, tiny_model_dir, version):
    rows = teacher_rows(tiny_model_dir, n=8)
    before = _token_kl(tiny_model_dir, tiny_model_dir, rows)
    task = _task(data_root, tiny_model_dir, method="kd", temperature=2.0, alpha=0.9, sft={"max_steps": 10})
    m = run_train(task, quiet=True)
    assert m["kd_level"] == "token" and m["counts"]["train"]["kd_positions"] > 0
    assert m["counts"]["train"]["kd_misaligned_rows"] == 0
    losses = _losses(m)
    assert losses[-1] < losses[0] * 0.8
    after = _token_kl(Path(m["output_dir"]), tiny_model_dir, rows)
    assert after < before * 0.75, (before, after)


def test_label_kd_from_a_teacher_with_another_tokenizer(data_root, tiny_model_dir):
    # API teacher: no ids in our vocabulary. It leans "positive" on every input while its answers
    # are half "negative", so only the soft labels can move the student towards it.
    rows = teacher_rows(tiny_model_dir, n=8, with_ids=False, p_positive=0.9)
    write_version(data_root, "sentiment", rows, rows[:2])
    before = _label_kl(tiny_model_dir, rows)
    task = _task(data_root, tiny_model_dir, method="kd", temperature=1.0, alpha=0.9, label_loss="kl",
                 sft={"max_steps": 10})
    m = run_train(task, quiet=True)
    assert m["kd_level"] == "label" and "no token ids" in m["token_kd_unavailable"]
    after = _label_kl(Path(m["output_dir"]), rows)
    assert after < before * 0.5, (before, after)


def test_token_level_kd_refuses_a_teacher_with_another_vocabulary(data_root, tiny_model_dir):
    rows = teacher_rows(tiny_model_dir, n=4)
    for row in rows:  # the same strings under other ids: another tokenizer's vocabulary
        for pos in row.token_logprobs:
            for cand in [pos, *pos.top]:
                cand.id = (cand.id + 7) % 400
    write_version(data_root, "sentiment", rows)
    task = _task(data_root, tiny_model_dir, method="kd", kd_level="token", sft={"max_steps": 1})
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: teacher token id .* token-level KD needs"):
        run_train(task, quiet=True)


def test_cli_reports_bad_set_flag_and_missing_dataset_as_one_line(data_root, tiny_model_dir, version, capsys):
    from pipeline.cli import main

    task = _task(data_root, tiny_model_dir, method="sft")
    assert main(["train", str(task.path), "--set", "lerning_rate=1e-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set: 'lerning_rate'") and "learning_rate" in err and "\n" not in err
    assert main(["train", str(task.path), "--version", "20990101T000000Z"]) == 2
    err = capsys.readouterr().err.strip()
    assert "20990101T000000Z/train.jsonl: no such dataset version (have: 20260101T000000Z)" in err


def test_grad_accumulation_two_by_one_equals_one_batch_of_two(data_root, tiny_model_dir):
    """The same two rows of different lengths, one SGD step: batch 2 vs batch 1 x accumulation 2."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from pipeline.training.data import encode_rows
    from pipeline.training.trainer import KDCollator, KDTrainer

    rows = teacher_rows(tiny_model_dir, n=8)
    rows[1].completion[0].content = "negative"  # keep it aligned...
    rows = [rows[0], rows[3]]  # "positive" (long review) and "negative" (short): different token counts
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = encode_rows(list(enumerate(rows)), tok, kd_level="token", labels=None, max_length=None)
    counts = [sum(x != -100 for x in r["labels"][1:]) for r in enc.rows]
    lens = [len(r["input_ids"]) for r in enc.rows]
    assert lens[0] != lens[1]

    def one_step(batch, accum, tmp):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        args = SFTConfig(output_dir=str(tmp), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                         max_steps=1, learning_rate=1.0, optim="sgd", lr_scheduler_type="constant", report_to="none",
                         bf16=False, save_strategy="no", shuffle_dataset=False, disable_tqdm=True, max_length=None,
                         max_grad_norm=0.0)
        trainer = KDTrainer(model=model, args=args, train_dataset=Dataset.from_list(enc.rows), processing_class=tok,
                            data_collator=KDCollator(tok.pad_token_id), kd_level="token", temperature=2.0, alpha=0.5)
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
        trainer.train()
        return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    a = one_step(2, 1, data_root / "a")
    b = one_step(1, 2, data_root / "b")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)
    assert counts[0] > 0 and counts[1] > 0


def test_resume_continues_from_the_last_checkpoint(data_root, tiny_model_dir, version, monkeypatch):
    from pipeline.training.trainer import KDTrainer

    task = _task(data_root, tiny_model_dir, method="kd", sft={"max_steps": 2, "save_strategy": "steps", "save_steps": 2})
    first = run_train(task, quiet=True)
    calls = []
    original = KDTrainer.training_step
    monkeypatch.setattr(KDTrainer, "training_step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    m = run_train(task, quiet=True, resume=True, overrides={"max_steps": 4})
    assert len(calls) == 2  # steps 3 and 4 only
    assert m["model_version"] == first["model_version"]
    assert m["params"]["resumed_from"].endswith("checkpoint-2")
    steps = [h["step"] for h in json.loads((Path(m["output_dir"]) / "metrics.json").read_text())["log_history"]
             if "loss" in h]
    assert steps == [1, 2, 3, 4]  # the checkpoint's history, then the new steps


def test_lora_trains_an_adapter_and_saves_a_merged_model(data_root, tiny_model_dir, version):
    task = _task(data_root, tiny_model_dir, method="kd", lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                 sft={"max_steps": 2})
    m = run_train(task, quiet=True)
    out = Path(m["output_dir"])
    assert (out / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged.state_dict()[q], base.state_dict()[q])
    k = "model.layers.0.self_attn.k_proj.weight"  # not a LoRA target: untouched
    assert torch.allclose(merged.state_dict()[k], base.state_dict()[k])


def test_two_runs_in_the_same_second_get_their_own_model_folders(data_root, monkeypatch):
    from datetime import datetime as real_datetime

    from pipeline.paths import TaskPaths
    from pipeline.stages import train as train_stage

    class Frozen(real_datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(train_stage, "datetime", Frozen)
    paths = TaskPaths("sentiment")
    assert train_stage._model_version_name(None, paths) == "20260102T030405Z"
    (paths.models_dir / "20260102T030405Z").mkdir(parents=True)
    assert train_stage._model_version_name(None, paths) == "20260102T030405Z-1"
    (paths.models_dir / "20260102T030405Z-1").mkdir()
    assert train_stage._model_version_name(None, paths) == "20260102T030405Z-2"


def _label_log_odds(model_dir: Path, rows) -> list[float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.training.data import encode_prompt_completion, label_completions

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    firsts = [ids[0] for ids in label_completions(tok, list(enumerate(rows)), ["positive", "negative"])]
    out = []
    with torch.no_grad():
        for row in rows:
            ids, start = encode_prompt_completion(tok, row.prompt, row.completion)
            logits = model(torch.tensor([ids[:start]])).logits[0, -1]
            out.append(float(logits[firsts[0]] - logits[firsts[1]]))
    return out


def test_logit_matching_learns_the_ranking_of_a_flat_teacher(data_root, tiny_model_dir):
    """A teacher whose P(positive) only spans 0.43-0.57 still ranks its inputs; the default label
    loss (logit_mse, standardised) makes the student's log-odds follow that ranking."""
    rows = teacher_rows(tiny_model_dir, n=8, with_ids=False)
    teacher = []
    for i, row in enumerate(rows):
        p = 0.43 + 0.02 * ((i * 3) % 8)  # 0.43-0.57 in a fixed shuffle of the rows
        row.soft_label = {"positive": p, "negative": 1 - p}
        row.label = "positive" if p > 0.5 else "negative"
        row.completion[0].content = row.label
        teacher.append(math.log(p / (1 - p)))
    write_version(data_root, "sentiment", rows, rows[:2])
    task = _task(data_root, tiny_model_dir, method="kd", alpha=0.9, early_stopping=None, sft={"max_steps": 30})
    m = run_train(task, quiet=True)
    assert m["kd_level"] == "label" and m["label_loss"] == "logit_mse" and m["steps"] == 30
    student = _label_log_odds(Path(m["output_dir"]), rows)
    assert _pearson(student, teacher) > 0.8, (student, teacher)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_early_stopping_keeps_the_best_agreement_and_records_the_curve(data_root, tiny_model_dir):
    rows = teacher_rows(tiny_model_dir, n=8, with_ids=False, p_positive=0.9)
    write_version(data_root, "sentiment", rows, rows[:4])
    task = _task(data_root, tiny_model_dir, method="kd", alpha=0.9,
                 early_stopping={"eval_steps": 2, "patience": 1}, sft={"max_steps": 40, "learning_rate": 0.0})
    m = run_train(task, quiet=True)
    curve = m["learning_curve"]["curve"]
    # lr 0: agreement never improves on step 0, so training stops at the first check after patience
    assert [p["step"] for p in curve] == [0, 2] and m["steps"] == 2
    assert curve[1]["agreement"] == curve[0]["agreement"] and curve[1]["kl"] == pytest.approx(curve[0]["kl"], abs=1e-6)
    assert m["learning_curve"]["best_step"] == 0 and m["metrics"]["heldout_agreement"] == curve[0]["agreement"]


def test_probe_label_head_is_fitted_before_training_and_saved_untied(data_root, tiny_model_dir):
    """train.label_head: probe runs the ridge fit on the training rows before TRL trains, records it
    in the manifest, and the saved student carries its own LM head, apart from its embeddings."""
    from safetensors.torch import load_file

    rows = teacher_rows(tiny_model_dir, n=12, with_ids=False, p_positive=0.7)
    write_version(data_root, "sentiment", rows, rows[:2])
    task = _task(data_root, tiny_model_dir, method="kd", alpha=0.9, early_stopping=None, label_head="probe",
                 sft={"max_steps": 2})
    m = run_train(task, quiet=True)
    assert m["label_head"]["rows"] == 12 and m["steps"] == 2
    saved = load_file(str(Path(m["output_dir"]) / "model.safetensors"))
    assert "lm_head.weight" in saved
    original = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    emb = "model.embed_tokens.weight"
    assert saved[emb].shape == original[emb].shape
    assert not torch.equal(saved["lm_head.weight"], saved[emb])  # untied: the label rows were refitted


def test_quiet_training_prints_nothing_but_its_warnings(data_root, tiny_model_dir, version, capfd):
    """`-q` is "no progress bars": the datasets' map bars ("Truncating train dataset") and the
    Trainer's log dicts (printed instead of a progress bar when it is off) went to the console too."""
    import datasets

    task = _task(data_root, tiny_model_dir, method="sft", sft={"max_steps": 2, "logging_steps": 1})
    datasets.enable_progress_bars()  # as a terminal run has them, whatever an earlier test left
    run_train(task, quiet=True)
    out, err = capfd.readouterr()
    assert "'loss'" not in out + err and "Truncating" not in out + err and "examples/s" not in out + err
    assert datasets.is_progress_bar_enabled()  # as it was: the bars are off for the run only
    run_train(task, quiet=False)
    out, err = capfd.readouterr()
    assert "'loss'" in out + err  # without -q the Trainer still reports
