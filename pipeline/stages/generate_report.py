"""What a generate run reports: its manifest (generated/manifest.json), the summary line, and
the warning about answers cut at ``max_tokens``. Used by ``pipeline/stages/generate.py``.
"""
from __future__ import annotations

from pipeline.config import TaskFolder
from pipeline.errors import DistillError
from pipeline.hashing import file_sha256
from pipeline.inputs import source_hashes
from pipeline.records import Record
from pipeline.teachers.progress import format_cost


def _files_read(task: TaskFolder) -> dict[str, str]:
    files = sorted(task.path.glob("*.j2")) + sorted(task.path.glob("*.yaml")) + sorted(task.path.glob("*.json"))
    read = {str(p): file_sha256(p) for p in files if p.exists()}
    return read | source_hashes(task.config.inputs.source, task.path)  # a folder (an HF dataset) hashes as a whole


def generate_manifest(task: TaskFolder, session, records: list[Record], started, wall_s: float, batch: bool,
                      limit: int | None, error: DistillError | None) -> dict:
    """The manifest of one run; ``session`` is generate's run state (passes, budget, failures)."""
    cfg = task.config
    passes = session.passes
    total = lambda key: sum(p.get(key) or 0 for p in passes.values())
    costs = [p.get("cost_usd") for p in passes.values()]
    price = session.budget.price
    return {
        "stage": "generate",
        "task": task.name,
        "created_at": started.isoformat(),
        "config": {"teacher": cfg.teacher.model_dump(mode="json"), "inputs": cfg.inputs.model_dump(mode="json")},
        "inputs": _files_read(task),
        "params": {"backend": cfg.teacher.backend, "model": cfg.teacher.model, "params": cfg.teacher.params,
                   "top_logprobs": cfg.teacher.top_logprobs, "batch": batch, "limit": limit},
        "teacher": {"backend": cfg.teacher.backend, "model": cfg.teacher.model,
                    "base_url": cfg.teacher.base_url, "price_known": price is not None},
        "template_hashes": task.template_hashes(),
        "counts": {"records": len(records), "new": sum(not r.cached for r in records),
                   "cached": sum(r.cached for r in records), "requests_sent": total("requests_sent"),
                   "failed": len(session.failed), "retries": total("retries"), "rate_limited_429": total("rate_limited_429"),
                   "stopped_at_max_tokens": sum(r.finish_reason == "length" for r in records)},
        "passes": passes,
        "tokens": {"prompt": total("prompt_tokens"), "completion": total("completion_tokens")},
        "cost_usd": None if price is None or None in costs else round(sum(c or 0 for c in costs), 6),
        "dataset_cost_usd": None if price is None else round(sum(r.cost_usd or 0 for r in records), 6),
        "retries": total("retries"),
        "rate_limited_429": total("rate_limited_429"),
        "timings": {"wall_s": round(wall_s, 3), **{f"{k}_s": v.get("wall_s") for k, v in passes.items()}},
        "complete": error is None,
        "stopped_by": None if error is None else str(error),
    }


def _max_tokens_named(params: dict) -> object:
    """The answer-length limit in ``params`` as the provider names it, for a warning."""
    return next((params[k] for k in ("max_tokens", "max_completion_tokens", "max_new_tokens") if k in params),
                "the provider's default")


def cut_written_inputs_warning(task: TaskFolder, params: dict, cut: int, written: int) -> str | None:
    """Teacher-written inputs that stopped at max_tokens are cut mid-text; they were paid for, so they
    are kept, and the run says how many."""
    if not cut:
        return None
    return (f"{task.path / 'task.yaml'}: {cut} of {written} teacher-written inputs stopped at "
            f"max_tokens={_max_tokens_named(params)} and are cut mid-text; raise inputs.generate.params.max_tokens")


def cut_answers_warning(task: TaskFolder, m: dict) -> str | None:
    """Answers that stopped at max_tokens are cut short. A label task cuts on purpose (a few tokens
    are enough), unless the limit is the silent default."""
    cut, teacher = m["counts"]["stopped_at_max_tokens"], task.config.teacher
    if not cut or (task.config.output.kind == "label" and not teacher.params_defaulted):
        return None
    limit = _max_tokens_named(teacher.params)
    default = " (the default: teacher.params is not set)" if teacher.params_defaulted else ""
    return (f"warning: {cut} of {m['counts']['records']} answers stopped at max_tokens={limit}{default} and are cut "
            "short; raise teacher.params.max_tokens (curate's filters.drop_truncated drops them)")


def summary_line(task: TaskFolder, m: dict) -> str:
    c = m["counts"]
    status = "done" if m["complete"] else "STOPPED"
    return (f"generate {task.name}: {status}: {c['records']} records ({c['new']} new, {c['cached']} cached), "
            f"{c['failed']} failed, {m['tokens']['prompt'] + m['tokens']['completion']} tokens, "
            f"{format_cost(m['cost_usd'])}, {c['retries']} retries, {c['rate_limited_429']} 429s, "
            f"{m['timings']['wall_s']:.1f}s")
