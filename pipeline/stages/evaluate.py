"""``distill evaluate <task>``: the trained student against the teacher on real inputs.

Reads:  models/<task>/<version>/ (the student; train_manifest.json names its dataset version)
        eval.source (real inputs, with gold answers when eval.gold_field is set), or else the
        held-out split data/<task>/versions/<dataset version>/eval.jsonl plus
        data/<task>/generated/generated.jsonl (the teacher's latency and token usage)
        the teacher's answers through the generate stage's cache (answers already bought are
        reused; only inputs never asked are sent, and cached for next time)
Writes: models/<task>/<version>/report.json (also this stage's manifest), report.md,
        quality_vs_cost.png, coverage_vs_quality.png, eval_predictions.jsonl

Quality is measured against gold answers when every input has one, else against the teacher's
answers (the teacher then scores 100%). Costs per 1,000 requests: the student's is its measured
machine seconds x eval.student_price_per_hour; the teacher's comes from the price table and the
recorded token usage (unknown when the model has no price), or, for a local teacher with
eval.teacher_price_per_hour set, from its recorded latency.
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config.task import TaskFolder, load_task
from pipeline.errors import ConfigError, InputDataError
from pipeline.evaluation import metrics as m
from pipeline.evaluation import routing as rt
from pipeline.evaluation.eval_inputs import EvalSet, held_out_set, read_eval_source, source_set
from pipeline.hashing import file_sha256
from pipeline.paths import TaskPaths
from pipeline.pricing import FREE, price_for

HELP = "Compare the trained student with the teacher on real inputs: quality, latency, cost, routing."
LOCAL_BACKENDS = ("hf", "vllm")
DISAGREEMENTS_SHOWN = 5


def load_eval_set(task: TaskFolder, dataset_version: str | None, limit: int | None, *, quiet: bool) -> EvalSet:
    """eval.source with the teacher's answers (through the generate stage's cache), else the held-out split."""
    if task.config.eval.source is None:
        return held_out_set(task, dataset_version, limit)
    from pipeline.stages.generate import answer_inputs

    inputs, golds, path = read_eval_source(task, limit)
    records = answer_inputs(task, [dict(x) for x in inputs], quiet=quiet)
    eval_set = source_set(task, inputs, golds, records, path)
    weights = dataset_label_weights(task, dataset_version)
    if task.config.output.kind == "label":  # judge the teacher's labels as the dataset was built
        eval_set.teacher_texts = [teacher_label(task, r, weights) or r.completion for r in records]
    return eval_set


def dataset_calibration(task: TaskFolder, dataset_version: str | None) -> dict | None:
    """The calibration the student's dataset was built with (its manifest's ``calibration``: the
    method, which curate's overshoot guard may have changed from output.calibrate, and the weights)."""
    if task.config.output.calibrate == "none" or not dataset_version:
        return None
    manifest = TaskPaths(task.name).versions_dir / dataset_version / "manifest.json"
    if not manifest.exists():
        return None
    return json.loads(manifest.read_text()).get("calibration")


def dataset_label_weights(task: TaskFolder, dataset_version: str | None) -> dict[str, float] | None:
    """The calibration weights the student's dataset was built with (output.calibrate), if any."""
    calibration = dataset_calibration(task, dataset_version)
    return calibration["weights"] if calibration else None


def teacher_label(task: TaskFolder, record, weights: dict[str, float] | None) -> str | None:
    """The teacher's label for a record: the argmax of its (calibrated) soft label; None when the
    record has no probabilities (its answer text is parsed instead)."""
    from pipeline.curation.soft_labels import label_distribution, reweight

    out = task.config.output
    dist = label_distribution(record, out.labels, out.normalize.aliases, out.label_codes)
    if dist is None or (weights is None and dist[2] != "scored"):
        return None
    p = reweight(dist[0], weights) if weights else dist[0]
    return max(p, key=p.get)


def resolve_model_dir(task: TaskFolder, model: str | Path | None) -> Path:
    """--model PATH, else the folder models/<task>/latest names."""
    if model is not None:
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--model {model}: no such folder; pass a trained student's folder (models/<task>/<version>)")
        return path
    models_dir = TaskPaths(task.name).models_dir
    pointer = models_dir / "latest"
    if not pointer.exists():
        raise ConfigError(f"{pointer}: no trained student for task '{task.name}'; run `distill train {task.name}` "
                          "or pass --model PATH")
    path = models_dir / pointer.read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise ConfigError(f"{pointer}: names '{path.name}', which is not in {models_dir}; re-run `distill train {task.name}`")
    return path


def read_train_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "train_manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputDataError(f"{path}: malformed JSON ({exc.msg}); re-run `distill train`") from None


def _max_new_tokens(task: TaskFolder) -> int:
    cfg = task.config
    if cfg.eval.max_new_tokens:
        return cfg.eval.max_new_tokens
    params = cfg.teacher.params
    for key in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        if isinstance(params.get(key), int):
            return params[key]
    return 256


def teacher_cost(task: TaskFolder, eval_set: EvalSet, timing: dict | None = None) -> tuple[float | None, str]:
    """(USD per 1,000 requests or None when unknown, how it was computed). ``timing``: a local
    teacher timed like the student (teacher_timing.py)."""
    teacher, cfg = task.config.teacher, task.config.eval
    if timing is not None and cfg.teacher_price_per_hour is not None:
        usd = m.machine_cost_per_1000(timing["seconds_per_request"], cfg.teacher_price_per_hour)
        how = ", batch by batch interleaved with the student's" if timing.get("interleaved") else ""
        return usd, (f"{1000 * timing['seconds_per_request']:.1f} ms of this machine per answer, timed like the "
                     f"student (batch size {timing['batch_size']}, {timing['timed_requests']} requests{how}) x "
                     f"${cfg.teacher_price_per_hour}/h")
    records = [r for r in eval_set.teacher_records if r is not None]
    if not records:
        return None, "unknown: no generation records for these inputs"
    if teacher.backend in LOCAL_BACKENDS and cfg.teacher_price_per_hour is not None:
        # in-process backends answer teacher.batch_size prompts per call and record the call's time
        # on each answer, so one request's share of the machine is that time / the batch size
        latency = m.mean([r.latency_s for r in records if r.latency_s is not None])
        per_request = None if latency is None else latency / teacher.batch_size
        usd = m.machine_cost_per_1000(per_request, cfg.teacher_price_per_hour)
        return usd, (f"recorded batch time / teacher.batch_size ({teacher.batch_size}) x "
                     f"${cfg.teacher_price_per_hour}/h (eval.teacher_price_per_hour)")
    price = price_for(teacher.backend, teacher.model)
    if price is None:
        return None, (f"unknown: '{teacher.model}' has no price in the price table; add it to a file named by "
                      "DISTILL_PRICES")
    usd = m.token_cost_per_1000([price.cost(r.usage.prompt_tokens, r.usage.completion_tokens) for r in records])
    if price == FREE:
        return usd, f"0 per token ({teacher.backend} runs locally); set eval.teacher_price_per_hour to price its machine"
    return usd, (f"price table (${price.input_per_mtok}/${price.output_per_mtok} per 1M input/output tokens) "
                 "x recorded token usage")


def headline_figures(scored, kind: str) -> dict[str, Any]:
    """The report's headline: the share of the teacher's margin over the majority-class baseline the
    student keeps ("gap closed"), its agreement with the teacher and Cohen's kappa, and a verdict
    that never dresses a student at or below the baseline up as a share of the teacher's quality."""
    out: dict[str, Any] = {"metric": scored.metric, "reference": scored.reference}
    if kind != "label":
        return out
    pairs = [(s, t) for s, t in zip(scored.student_parsed, scored.teacher_parsed)]
    out["agreement"] = m.agreement([s for s, _ in pairs], [t for _, t in pairs])
    out["kappa"] = m.cohen_kappa([s for s, _ in pairs], [t for _, t in pairs])
    q_student, q_teacher = scored.quality("student"), scored.quality("teacher")
    if scored.reference == "gold":
        reference = scored.golds
    else:  # against the teacher: the baseline always answers the teacher's most frequent label
        reference = scored.teacher_parsed
    majority = m.majority_share(reference or [])
    out["majority_label"], out["majority_baseline"] = majority if majority else (None, None)
    baseline = out["majority_baseline"]
    out["student"], out["teacher"] = q_student, q_teacher
    out["gap_closed"] = m.gap_closed(q_student, q_teacher, baseline)
    if majority and q_teacher is not None:
        out["teacher_margin"] = m.margin_over_constant(
            [scored.teacher_scores[i] for i in scored.scored], [reference[i] for i in scored.scored], majority[0])
    if baseline is None or q_student is None:
        out["verdict"] = "unknown"
    elif q_teacher is not None and q_teacher <= baseline + 1e-9:
        out["verdict"] = "teacher_at_or_below_baseline"
    elif out.get("teacher_margin") and not out["teacher_margin"]["beyond_chance"]:
        # a ratio over a margin of a few inputs is noise (a 1.6-point margin read as "175% closed")
        out["verdict"], out["gap_closed"] = "teacher_margin_within_chance", None
    elif q_student <= baseline + 1e-9:
        out["verdict"] = "student_at_or_below_baseline"
    else:
        out["verdict"] = "above_baseline"
    return out


def build_report(task: TaskFolder, model_dir: Path, manifest: dict, eval_set: EvalSet, run, scored,
                 timings: dict[str, float], teacher_timing: dict | None = None) -> dict[str, Any]:
    """Every number of the report; ``run`` is a StudentRun, ``scored`` a Scored."""
    cfg = task.config
    kind = cfg.output.kind
    scored_idx = scored.scored
    learning = manifest.get("learning_curve") or {}  # label tasks trained with early stopping
    if kind == "label":
        confidence = [rt.label_confidence(lps)[1] for lps in run.label_logprobs]
        confidence_name = "highest renormalised label probability"
    else:
        confidence = [rt.mean_token_logprob(lps) for lps in run.token_logprobs]
        confidence_name = "mean token logprob"
    q_student, q_teacher = scored.quality("student"), scored.quality("teacher")
    target = cfg.eval.target_quality if cfg.eval.target_quality is not None else q_teacher
    # The student's cost: timed on the teacher's requests, interleaved with it, when the teacher was
    # timed here (teacher_timing.py); else its whole evaluation pass.
    paired = teacher_timing.get("student_seconds_per_request") if teacher_timing else None
    student_s = paired if paired is not None else run.seconds_per_request
    student_usd = m.machine_cost_per_1000(student_s, cfg.eval.student_price_per_hour)
    # routing runs the student on every request and needs its confidence too
    routed_s = None if student_s is None else student_s + run.confidence_seconds_per_request
    student_routed_usd = m.machine_cost_per_1000(routed_s, cfg.eval.student_price_per_hour)
    teacher_usd, teacher_basis = teacher_cost(task, eval_set, teacher_timing)
    routing: dict[str, Any] = {"confidence": confidence_name, "target": target,
                               "target_source": "eval.target_quality" if cfg.eval.target_quality is not None
                               else "the teacher's quality", "threshold": None, "coverage": 0.0,
                               "student_quality": None, "routed_quality": q_teacher,
                               "routed_cost_per_1000_usd": teacher_usd,  # no threshold: the teacher alone
                               "pays": None, "chosen_on": None, "reported_on": None,
                               "curve": []}
    if scored_idx and target is not None:
        curve = rt.coverage_curve([confidence[i] for i in scored_idx], [scored.student_scores[i] for i in scored_idx],
                                  [scored.teacher_scores[i] for i in scored_idx])
        routing["curve"] = [p.as_dict() for p in curve]
        # The threshold is chosen on one half of the inputs and its figures are reported on the other:
        # chosen and measured on the same inputs, the student's share would look better than it is.
        held = rt.held_out_threshold(scored_idx, eval_set.ids, confidence, scored.student_scores,
                                     scored.teacher_scores, target)
        routing["chosen_on"] = held["chosen_on"]
        routing["reported_on"] = held["reported_on"]
        if held["point"] is not None:
            best = held["point"]
            usd = rt.routed_cost_per_1000(best.coverage, student_routed_usd, teacher_usd)
            routing.update(threshold=best.threshold, coverage=best.coverage, student_quality=best.student_quality,
                           routed_quality=best.routed_quality, routed_cost_per_1000_usd=usd,
                           pays=rt.routing_pays(usd, best.routed_quality, teacher_usd, q_teacher))
    teacher_lat = [r.latency_s for r in eval_set.teacher_records if r is not None and r.latency_s is not None]
    teacher_lat_source = "the generation records" + (
        f" (in-process {cfg.teacher.backend}: the time of a batch of up to {cfg.teacher.batch_size})"
        if cfg.teacher.backend in LOCAL_BACKENDS else "")
    if teacher_timing is not None and teacher_timing["latencies_s"]:
        teacher_lat = teacher_timing["latencies_s"]
        teacher_lat_source = "one request at a time, timed like the student"
    pct = m.quality_percent(q_student, q_teacher)
    n = len(eval_set.prompts)
    headline = headline_figures(scored, kind)
    disagreements = [
        {"input": eval_set.inputs[i] or eval_set.prompts[i][-1].content, "gold": eval_set.golds[i] if eval_set.golds else None,
         "teacher": eval_set.teacher_texts[i], "student": run.texts[i]}
        for i in range(n) if scored.student_parsed[i] != scored.teacher_parsed[i]
    ][:DISAGREEMENTS_SHOWN]
    return {
        "stage": "evaluate",
        "task": task.name,
        "created_at": datetime.now(UTC).isoformat(),
        "config": {k: getattr(cfg, k).model_dump(mode="json") for k in ("eval", "output", "teacher")},
        "inputs": eval_set.input_hashes,
        "params": {
            "model_dir": str(model_dir), "model_version": model_dir.name,
            "dataset_version": manifest.get("dataset_version"), "method": manifest.get("method"),
            "teacher": f"{cfg.teacher.backend}:{cfg.teacher.model}", "eval_source": eval_set.description,
            "max_new_tokens": run.max_new_tokens, "batch_size": run.batch_size, "templates": task.template_hashes(),
        },
        "counts": {"inputs": n, "scored": len(scored_idx), "with_gold": len(eval_set.golds or []),
                   "student_unparsed": sum(p is None for p in scored.student_parsed),
                   "teacher_unparsed": sum(p is None for p in scored.teacher_parsed),
                   "teacher_cached": eval_set.teacher_cached, "teacher_new": eval_set.teacher_new},
        "timings": timings,
        "kind": kind,
        "reference": scored.reference,
        "quality": {"metric": scored.metric, "student": q_student, "teacher": q_teacher, "student_pct_of_teacher": pct},
        "metrics": {"student": scored.student_metrics, "teacher": scored.teacher_metrics},
        "latency": {
            "student": {**m.latency_summary(run.latencies_s),
                        "method": "one request at a time" if run.latency_method == "single" else "per batch"},
            "teacher": {**m.latency_summary(teacher_lat), "source": teacher_lat_source},
        },
        "throughput": {"student_rps": 1.0 / student_s if paired else run.throughput_rps, "batch_size": run.batch_size,
                       "teacher_rps": (1.0 / teacher_timing["seconds_per_request"]
                                       if teacher_timing and teacher_timing["seconds_per_request"] else None)},
        "cost_per_1000": {
            "student_usd": student_usd, "student_with_confidence_usd": student_routed_usd,
            "teacher_usd": teacher_usd, "teacher_basis": teacher_basis,
            "paired_timing": ({k: teacher_timing[k] for k in ("timed_requests", "paired_batches", "paired_ratio",
                                                              "ratio_of_sums")} if paired else None),
            "student_basis": (f"{1000 * (student_s or 0):.1f} ms of this machine per answer (batched"
                              + (f", on the teacher's {teacher_timing['timed_requests']} timed requests, interleaved: "
                                 f"its time over the median ratio of {teacher_timing['paired_batches']} paired "
                                 "batches" if paired else "") + f") x ${cfg.eval.student_price_per_hour}/h"
                              + (f"; {1000 * run.confidence_s / n:.1f} ms more per request for the label confidence "
                                 "when routing" if run.confidence_s and n else "")),
        },
        "routing": routing,
        "disagreements": disagreements,
        "per_label": (m.per_label(cfg.output.labels, scored.teacher_parsed, scored.student_parsed, scored.golds)
                      if kind == "label" else None),
        "headline": headline,
        "learning_curve": learning.get("curve"),
        "learning_kept": ({"step": learning.get("best_step"), "against_start": learning.get("against_start")}
                          if learning.get("curve") else None),
        "summary": {"gap_closed": headline.get("gap_closed"), "agreement_with_teacher": headline.get("agreement"),
                    "cohen_kappa": headline.get("kappa"), "verdict": headline.get("verdict"),
                    # the student's quality as a share of the teacher's only where the teacher has a real
                    # margin that the student keeps part of: "93% of the teacher" for a teacher within
                    # chance of the majority answer was the misreading the headline exists to prevent
                    "quality_pct_of_teacher": pct if headline.get("verdict") in (None, "above_baseline") else None,
                    "student_usd_per_1000": student_usd,
                    "teacher_usd_per_1000": teacher_usd,
                    "cost_ratio": (teacher_usd / student_usd) if teacher_usd and student_usd else None,
                    "routing_coverage": routing["coverage"]},
    }


def run_evaluate(task: TaskFolder, *, quiet: bool = False, model: str | Path | None = None,
                 limit: int | None = None) -> dict[str, Any]:
    """Evaluate the student in ``model`` (default: the task's latest) and write its report."""
    from pipeline.evaluation.report import print_summary, write_report
    from pipeline.evaluation.scoring import score_answers
    from pipeline.evaluation.student import label_scorer, run_student, run_student_labels
    from pipeline.records import write_jsonl
    from pipeline.stages.generate import scoring_labels

    started = time.perf_counter()
    model_dir = resolve_model_dir(task, model)
    manifest = read_train_manifest(model_dir)
    say = (lambda msg: None) if quiet else (lambda msg: print(f"evaluate: {msg}", flush=True))
    from pipeline.local_models import quiet_model_loading

    quiet_model_loading()
    eval_set = load_eval_set(task, manifest.get("dataset_version"), limit or task.config.eval.limit, quiet=quiet)
    if (model_dir / "train_manifest.json").exists():  # names the weights' training run
        eval_set.input_hashes[str(model_dir / "train_manifest.json")] = file_sha256(model_dir / "train_manifest.json")
    timings = {"teacher_s": round(time.perf_counter() - started, 3)}
    say(f"{len(eval_set.prompts)} inputs from {eval_set.description}; teacher answers ready "
        f"({eval_set.teacher_cached} cached, {eval_set.teacher_new} new)")

    t0 = time.perf_counter()
    cfg = task.config
    progress = None if quiet else (lambda done, total: say(f"student {done}/{total}"))
    constrained = cfg.output.kind == "label" and cfg.eval.label_answer == "constrained"
    if constrained:
        scorer = label_scorer(model_dir, eval_set.prompts, cfg.output.labels)  # loaded once: answers and timing
        run = run_student_labels(model_dir, eval_set.prompts, cfg.output.labels, batch_size=cfg.eval.batch_size,
                                 scorer=scorer,
                                 latency_samples=cfg.eval.latency_samples, on_batch=progress)
    else:
        run = run_student(model_dir, eval_set.prompts, max_new_tokens=_max_new_tokens(task),
                          batch_size=cfg.eval.batch_size,
                          labels=cfg.output.labels if cfg.output.kind == "label" else None,
                          latency_samples=cfg.eval.latency_samples, on_batch=progress)
    timings["student_s"] = round(time.perf_counter() - t0, 3)
    teacher_timing = None
    if constrained and scoring_labels(task) and cfg.eval.teacher_price_per_hour is not None:
        from pipeline.evaluation.teacher_timing import time_local_teacher

        t0 = time.perf_counter()
        say("timing the teacher like the student")
        teacher_timing = time_local_teacher(cfg.teacher.model, eval_set.prompts, cfg.output.labels,
                                            batch_size=cfg.eval.batch_size, latency_samples=cfg.eval.latency_samples,
                                            student=scorer)
        timings["teacher_timing_s"] = round(time.perf_counter() - t0, 3)
    if constrained and run.label_logprobs:
        run.texts = [max(lps, key=lps.get) for lps in run.label_logprobs]  # the most probable label of the set
    scored = score_answers(cfg.output, run.texts, eval_set.teacher_texts, eval_set.golds, eval_set.schema)
    timings["total_s"] = round(time.perf_counter() - started, 3)
    report = build_report(task, model_dir, manifest, eval_set, run, scored, timings, teacher_timing)
    used = dataset_calibration(task, manifest.get("dataset_version")) if cfg.output.kind == "label" else None
    if used and used.get("configured"):  # curate's overshoot guard chose another method
        report["calibration_fallback"] = {k: used[k] for k in ("configured", "method", "overshoot")}
    if eval_set.golds and cfg.output.kind == "label":
        from pipeline.evaluation.calibration_check import check_task_calibration

        report["teacher_calibration"] = check_task_calibration(task, eval_set.teacher_records, eval_set.golds,
                                                               configured=used["method"] if used else None)
    write_jsonl(model_dir / "eval_predictions.jsonl", [
        {"id": eval_set.ids[i], "inputs": eval_set.inputs[i], "gold": eval_set.golds[i] if eval_set.golds else None,
         "teacher": eval_set.teacher_texts[i], "student": run.texts[i], "teacher_parsed": scored.teacher_parsed[i],
         "student_parsed": scored.student_parsed[i], "student_score": scored.student_scores[i],
         "teacher_score": scored.teacher_scores[i],
         "confidence": (rt.label_confidence(run.label_logprobs[i])[1] if run.label_logprobs
                        else rt.mean_token_logprob(run.token_logprobs[i]))}
        for i in range(len(run.texts))
    ])
    write_report(report, model_dir, extra_files={"predictions_jsonl": model_dir / "eval_predictions.jsonl"})
    if not quiet:
        print_summary(report)
    return report


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or task name.")
    parser.add_argument("--model", metavar="PATH", help="Student model folder (default: models/<task>/latest).")
    parser.add_argument("--limit", type=int, metavar="N", help="Evaluate on the first N inputs (overrides eval.limit).")
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress or summary; just write the report.")


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be at least 1")
    task = load_task(args.task)
    run_evaluate(task, quiet=args.quiet, model=args.model, limit=args.limit)
    return 0
