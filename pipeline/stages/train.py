"""``distill train <task>``: fine-tune the student on a built dataset version, SFT or KD.

Reads:  prompts/<task>/task.yaml (student:, train:, output.labels),
        data/<task>/versions/<v>/train.jsonl, eval.jsonl (TrainRow; v = --version or data/<task>/latest),
        the student's weights (a local folder, or the embedded model's cached folder).
Writes: models/<task>/<model version>/   model weights + config, tokenizer with its chat template,
            training_args.json, metrics.json, train_manifest.json (dataset version, method, T, alpha,
            student init, counts, timings), checkpoints/ (for --resume)
        models/<task>/latest               text: the newest model version's folder name

Runs unchanged under ``accelerate launch`` (configs in pipeline/configs/accelerate/); only the
main process writes the outputs.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.config.task import TaskFolder, load_task, validation_error_lines
from pipeline.config.train import TrainConfig
from pipeline.errors import ConfigError, InputDataError
from pipeline.hashing import file_sha256
from pipeline.paths import TaskPaths
from pipeline.stages.notices import warn

HELP = "Train the student on a built dataset version: SFT or knowledge distillation (TRL)."
RUN_FILE = "run.json"  # written before training starts, so --resume knows what was running


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or its name.")
    parser.add_argument("--method", choices=["sft", "kd"], help="Override train.method.")
    parser.add_argument("-T", "--temperature", type=float, help="Override train.temperature (KD).")
    parser.add_argument("--alpha", type=float, help="Override train.alpha: alpha*T^2*KL + (1-alpha)*CE.")
    parser.add_argument("--kd-level", choices=["auto", "token", "label"], help="Override train.kd_level.")
    parser.add_argument("--version", help="Dataset version to train on (default: data/<task>/latest).")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="Set any SFTConfig field, e.g. --set max_steps=20 --set learning_rate=1e-4 (repeatable).",
    )
    parser.add_argument(
        "--resume", nargs="?", const="latest", metavar="MODEL_VERSION",
        help="Resume from the last checkpoint of a model version (default: models/<task>/latest).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress bars.")


def main(args) -> int:
    from pipeline.training.arguments import parse_set_overrides

    task = load_task(args.task)
    manifest = run_train(
        task, quiet=args.quiet, version=args.version, method=args.method,
        overrides=parse_set_overrides(args.overrides), temperature=args.temperature, alpha=args.alpha,
        kd_level=args.kd_level, resume=args.resume,
    )
    if manifest and not args.quiet:
        m = manifest["metrics"]
        what = manifest["method"] + (f", kd {manifest['kd_level']}" if manifest["method"] == "kd" else "")
        if manifest["objective"].startswith("cross-entropy"):
            what = "kd on one-hot labels = cross-entropy"
        print(f"trained {manifest['model_version']} ({what}) on dataset "
              f"{manifest['dataset_version']}: train_loss={m.get('train_loss', float('nan')):.4f} "
              f"-> {manifest['output_dir']}")
    return 0


def effective_train_config(task: TaskFolder, **changes: Any) -> TrainConfig:
    data = task.config.train.model_dump()
    data.update({k: v for k, v in changes.items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_error_lines(f"{task.path / 'task.yaml'} (with flags)", exc, TrainConfig)[0]) from None


def _model_version_name(resume: str | None, paths: TaskPaths) -> str:
    """A new UTC timestamp, or the folder being resumed. Rank 0 decides; every rank gets the same."""
    from accelerate.utils import broadcast_object_list

    if resume:
        name = resume
        if resume == "latest":
            pointer = paths.models_dir / "latest"
            if not pointer.exists():
                raise ConfigError(f"{pointer}: no model to resume for task '{paths.task}'; drop --resume")
            name = pointer.read_text(encoding="utf-8").strip()
        if not (paths.models_dir / name / RUN_FILE).exists():
            raise ConfigError(f"{paths.models_dir / name}: not a training run folder; check the --resume name")
        return name
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    n = 1
    while (paths.models_dir / name).exists():  # two runs in one second must not share a folder
        name, n = f"{name.split('-')[0]}-{n}", n + 1
    box = [name]
    broadcast_object_list(box)  # ranks may straddle a second boundary: rank 0's name wins
    return box[0]


def run_train(
    task: TaskFolder,
    *,
    quiet: bool = False,
    version: str | None = None,
    method: str | None = None,
    overrides: dict[str, Any] | None = None,
    temperature: float | None = None,
    alpha: float | None = None,
    kd_level: str | None = None,
    resume: str | bool | None = None,
    evaluate: bool = True,
) -> dict:
    """Train and write models/<task>/<model version>/. Returns the train manifest (empty on ranks
    other than the main one). ``evaluate=False`` skips the final eval-loss pass over eval.jsonl."""
    import torch
    from accelerate import PartialState

    from pipeline.local_models import quiet_model_loading
    from pipeline.training.arguments import build_sft_config, lora_config
    from pipeline.training.data import choose_kd_level, encode_rows, label_completions, read_train_rows
    from pipeline.training.student_init import build_student

    quiet_model_loading()
    # peft asks the model `is_gradient_checkpointing`, deprecated in transformers 5: nothing a user can change
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    t0 = time.perf_counter()
    # cpu=True on a machine without CUDA: under a torchrun-style launcher accelerate then picks gloo
    # (MULTI_CPU) instead of silently running each rank alone. First PartialState wins, so do it here.
    state = PartialState(cpu=not torch.cuda.is_available())
    task_file = str(task.path / "task.yaml")
    paths = TaskPaths(task.name)
    resume = "latest" if resume is True else (resume or None)
    model_version = _model_version_name(resume, paths)
    out_dir = paths.models_dir / model_version
    previous = json.loads((out_dir / RUN_FILE).read_text()) if resume else {}
    cfg = effective_train_config(task, method=method, temperature=temperature, alpha=alpha, kd_level=kd_level)
    if previous:  # a resumed run keeps its dataset, method and settings
        version = version or previous["dataset_version"]
        cfg = TrainConfig.model_validate(previous["train"])
        overrides = {**previous.get("overrides", {}), **(overrides or {})}
    overrides = dict(overrides or {})

    vdir = paths.version_dir(version)
    if not (vdir / "train.jsonl").is_file():
        have = sorted(p.name for p in paths.versions_dir.glob("*") if p.is_dir()) if paths.versions_dir.exists() else []
        raise InputDataError(
            f"{vdir / 'train.jsonl'}: no such dataset version (have: {', '.join(have) or 'none'}); "
            f"run `distill curate {task.name}` or pick --version"
        )
    sft_args = build_sft_config(out_dir / "checkpoints", dict(task.config.train.sft), overrides,
                                task_file=task_file, quiet=quiet)
    model, tok_src, student_info = build_student(task.config.student)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tok_src)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    train_rows = read_train_rows(vdir / "train.jsonl")
    eval_rows = read_train_rows(vdir / "eval.jsonl") if (vdir / "eval.jsonl").is_file() else []
    if not train_rows:
        raise InputDataError(f"{vdir / 'train.jsonl'}: no rows; re-run `distill curate {task.name}`")
    labels = task.config.output.labels if task.config.output.kind == "label" else None
    level, token_problem = choose_kd_level(cfg.method, cfg.kd_level, train_rows, tokenizer, labels, vdir / "train.jsonl")
    if level == "none" and labels and any(r.label for _, r in train_rows):
        # SFT on a label task: the same trainer with alpha 0 is exactly cross-entropy on the teacher's
        # labels, and it can read the student's labels for early stopping and the learning curve
        level, cfg = "label", cfg.model_copy(update={"alpha": 0.0})
    enc = {"kd_level": level, "labels": labels, "max_length": sft_args.max_length,
           "truncation_mode": sft_args.truncation_mode, "completion_only_loss": sft_args.completion_only_loss}
    train_enc = encode_rows(train_rows, tokenizer, **enc)
    eval_enc = encode_rows(eval_rows, tokenizer, **enc) if eval_rows else None
    objective = training_objective(cfg.method, level, train_rows)
    stage_warnings: list[str] = []
    if state.is_main_process:
        warn(dropped_rows_warning(train_enc, eval_enc, sft_args.max_length, task_file), stage_warnings, quiet)
        if objective.startswith("cross-entropy") and not quiet:
            print(f"train: {objective}", file=sys.stderr, flush=True)
    if level != "none" and (sft_args.packing or sft_args.padding_free):
        raise ConfigError(f"{task_file}: train.sft: packing / padding_free mix rows, so the teacher's "
                          "per-row logprobs cannot follow them; turn them off for method kd")

    if state.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        run_info = {"dataset_version": vdir.name, "train": cfg.model_dump(), "overrides": overrides}
        (out_dir / RUN_FILE).write_text(json.dumps(run_info, indent=2, default=str), encoding="utf-8")
    label_ids = label_completions(tokenizer, train_rows, labels) if level == "label" else None
    head_init = None
    if level == "label" and cfg.label_head == "probe":  # before the trainer: its optimiser takes the new head
        from pipeline.training.label_head import init_label_head

        head_init = init_label_head(model, train_enc.rows, label_ids, tokenizer.pad_token_id, hard=cfg.method == "sft")
    with _datasets_bars(enabled=not quiet):  # SFTTrainer maps the datasets ("Truncating train dataset")
        trainer = _make_trainer(cfg, level, model, tokenizer, sft_args, train_enc.rows,
                                eval_enc.rows if eval_enc else None, lora_config(cfg.lora, task_file), label_ids)
    if quiet:  # with its progress bar off, Trainer prints every log dict instead (PrinterCallback)
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    stopper = None
    if level == "label" and cfg.early_stopping and eval_enc and eval_enc.rows:
        from pipeline.training.early_stop import AgreementEarlyStopping

        stopper = AgreementEarlyStopping(trainer, eval_enc.rows, eval_steps=cfg.early_stopping.eval_steps,
                                         patience=cfg.early_stopping.patience,
                                         batch_size=sft_args.per_device_eval_batch_size,
                                         require_gain_beyond_chance=cfg.early_stopping.require_gain_beyond_chance)
        trainer.add_callback(stopper)
    resume_ckpt = None
    if resume:
        from transformers.trainer_utils import get_last_checkpoint

        resume_ckpt = get_last_checkpoint(str(out_dir / "checkpoints")) if (out_dir / "checkpoints").is_dir() else None
        if resume_ckpt is None:
            raise ConfigError(f"{out_dir / 'checkpoints'}: no checkpoint to resume from; train again without --resume")
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_ckpt)
    train_s = time.perf_counter() - t_train
    metrics = dict(result.metrics)
    if evaluate and eval_enc and eval_enc.rows:
        metrics.update(trainer.evaluate())
    learning = stopper.summary() if stopper else None
    if learning:
        metrics["heldout_agreement"] = learning["best_agreement"]
    trainer.accelerator.wait_for_everyone()
    if not state.is_main_process:
        _end_process_group()
        return {}
    manifest = _write_outputs(trainer, tokenizer, task, out_dir, paths, vdir, cfg, level, token_problem, sft_args,
                              overrides, student_info, train_enc, eval_enc, metrics,
                              {"train_s": round(train_s, 3), "total_s": round(time.perf_counter() - t0, 3)}, resume_ckpt,
                              {"objective": objective,  # what the loss really was (kd, sft, or cross-entropy)
                               "soft_labels": dict(Counter(r.soft_label_kind or "none" for _, r in train_rows))
                               if level == "label" else None, "label_head": head_init, "warnings": stage_warnings}, learning)
    _end_process_group()
    return manifest


@contextlib.contextmanager
def _datasets_bars(enabled: bool):
    """``datasets``' progress bars off inside the block when not ``enabled``, as they were after it."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was and not enabled:
            datasets.enable_progress_bars()


def _end_process_group() -> None:
    """Under ``accelerate launch``, close the process group once every rank is done with it: left to
    the interpreter's exit, gloo's threads can still be running and a rank aborts ("terminate called
    without an active exception"), which fails the launch after the model was trained."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def training_objective(method: str, level: str, rows) -> str:
    """"kd", "sft", or what label-level KD really is when no row carries a teacher distribution:
    KL to a one-hot target is cross-entropy, so it is not called KD (README: a teacher without logprobs)."""
    if method == "sft" or level == "none":
        return "sft"
    if level == "label" and not any(r.soft_label_kind in ("logprobs", "scored") for _, r in rows):
        return ("cross-entropy: no training row has a teacher soft label (the teacher kept no logprobs), so KD on "
                "one-hot labels is plain cross-entropy; set teacher.top_logprobs for soft labels")
    return "kd"


def dropped_rows_warning(train_enc, eval_enc, max_length: int | None, task_file: str) -> str | None:
    """Rows whose prompt alone fills max_length lose their answer and are dropped: say it here, not
    only in train_manifest.json."""
    lost = {name: (enc.counts["dropped_truncated"], enc.counts["rows"] + enc.counts["dropped_truncated"])
            for name, enc in (("training", train_enc), ("eval", eval_enc)) if enc is not None}
    if not any(d for d, _ in lost.values()):
        return None
    longest = max(enc.counts["longest_tokens"] for enc in (train_enc, eval_enc) if enc is not None)
    parts = " and ".join(f"{d} of {n} {name} rows" for name, (d, n) in lost.items())
    return (f"warning: train: {parts} are longer than train.sft.max_length {max_length} and were dropped; "
            f"set train.sft.max_length: {longest} in {task_file} to keep them")


def _make_trainer(cfg: TrainConfig, level: str, model, tokenizer, sft_args, train_rows, eval_rows, peft_config,
                  label_ids=None):
    from datasets import Dataset
    from trl import SFTTrainer

    from pipeline.training.trainer import KDCollator, KDTrainer

    train_ds = Dataset.from_list(train_rows)
    eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    common = {"model": model, "args": sft_args, "train_dataset": train_ds, "eval_dataset": eval_ds,
              "processing_class": tokenizer, "peft_config": peft_config}
    if level == "none":
        return SFTTrainer(**common)
    from pipeline.training.label_kd import teacher_logit_scale

    scale = teacher_logit_scale([r["label_probs"] for r in train_rows]) if level == "label" else 1.0
    return KDTrainer(**common, data_collator=KDCollator(tokenizer.pad_token_id, sft_args.pad_to_multiple_of),
                     kd_level=level, temperature=cfg.temperature, alpha=cfg.alpha, label_ids=label_ids,
                     label_loss=cfg.label_loss, logit_scale=scale)


def _write_outputs(trainer, tokenizer, task, out_dir, paths, vdir, cfg, level, token_problem, sft_args, overrides,
                   student_info, train_enc, eval_enc, metrics, timings, resume_ckpt, described,
                   learning=None) -> dict:
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: keep the adapter, and a merged model evaluate can load
        model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)  # with its chat template (chat_template.jinja)
    (out_dir / "training_args.json").write_text(sft_args.to_json_string(), encoding="utf-8")
    metrics_doc = {"final": metrics, "log_history": trainer.state.log_history, "learning_curve": learning}
    (out_dir / "metrics.json").write_text(json.dumps(metrics_doc, indent=2, default=str), encoding="utf-8")
    inputs = {str(p): file_sha256(p) for p in (vdir / "train.jsonl", vdir / "eval.jsonl") if p.is_file()}
    counts = {"train": train_enc.counts, "eval": eval_enc.counts if eval_enc else {}}
    manifest = {
        "stage": "train",
        "task": task.name,
        "created_at": datetime.now(UTC).isoformat(),
        "config": {"student": task.config.student.model_dump(), "train": cfg.model_dump()},
        "inputs": inputs,
        "params": {"method": cfg.method, "kd_level": level, "temperature": cfg.temperature, "alpha": cfg.alpha,
                   "sft_overrides": overrides, "resumed_from": resume_ckpt,
                   "world_size": trainer.accelerator.num_processes},
        "counts": counts,
        "timings": timings,
        "model_version": out_dir.name,
        "output_dir": str(out_dir),
        "dataset_version": vdir.name,
        "dataset_dir": str(vdir),
        "method": cfg.method,
        "kd_level": level,
        **described,
        "token_kd_unavailable": token_problem,
        "temperature": cfg.temperature,
        "alpha": cfg.alpha,
        "student": student_info,
        "lora": cfg.lora,
        "label_loss": cfg.label_loss if level == "label" and cfg.alpha > 0 else None,
        "steps": trainer.state.global_step,
        "learning_curve": learning,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
    }
    (out_dir / "train_manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    pointer = paths.models_dir / "latest"
    tmp = pointer.with_suffix(".tmp")
    tmp.write_text(out_dir.name + "\n", encoding="utf-8")
    tmp.replace(pointer)
    return manifest


if __name__ == "__main__":  # `accelerate launch -m pipeline.stages.train <task> ...`
    import sys

    from pipeline.cli import main as cli_main

    sys.exit(cli_main(["train", *sys.argv[1:]]))
