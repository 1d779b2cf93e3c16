"""``distill run <task>``: generate -> curate -> train -> evaluate, incrementally, under a lock.

Reads:  prompts/<task>/, the input source, data/<task>/run_state.json (the fingerprint each stage
        finished with).
Writes: whatever the stages write; a drift report (drift.json, drift.md) in each new dataset
        version; data/<task>/run_state.json.

A stage is skipped when the content fingerprint of its inputs and config equals the one it last
finished with, so a re-run with nothing changed does no work and sends no request. When a stage
does run, the generate stage's cache means only new or changed prompts reach the teacher.

Exit codes: 0 something changed (a new dataset version or model), 10 nothing changed,
2-4 an error (config, budget reached, lock held).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pipeline.config.task import TaskFolder, load_task
from pipeline.orchestration import fingerprint as fp
from pipeline.orchestration.drift import compare_versions, drift_markdown
from pipeline.orchestration.lock import TaskLock
from pipeline.orchestration.retention import prune_versions
from pipeline.paths import TaskPaths

HELP = "Run generate -> curate -> train -> evaluate, skipping what is unchanged (for schedulers)."
STAGES = ("generate", "curate", "train", "evaluate")
EXIT_NOTHING_CHANGED = 10


def _load_state(paths: TaskPaths) -> dict[str, Any]:
    f = paths.root / "run_state.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _save_state(paths: TaskPaths, state: dict[str, Any]) -> None:
    f = paths.root / "run_state.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(f)


def _pointer(path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def run_pipeline(
    task: TaskFolder,
    *,
    quiet: bool = False,
    keep: int = 5,
    stages: tuple[str, ...] = STAGES,
    force: bool = False,
    log=print,
) -> dict[str, Any]:
    """Run the stages in order; returns the summary (also the quiet mode's JSON line)."""
    from pipeline.stages.curate import run_curate
    from pipeline.stages.evaluate import run_evaluate
    from pipeline.stages.generate import run_generate
    from pipeline.stages.train import run_train

    paths = TaskPaths(task.name)
    started = time.monotonic()
    summary: dict[str, Any] = {"task": task.name, "stages": {}, "changed": False, "warnings": {}}

    def keep_warnings(stage: str, manifest: dict) -> None:  # a quiet run's warnings reach its summary line
        if manifest.get("warnings"):
            summary["warnings"][stage] = manifest["warnings"]
    with TaskLock(paths.lock_file) as lock:
        if lock.stale_holder and not quiet:
            log(f"note: took over a stale lock left by pid {lock.stale_holder.get('pid')} (that run had died)")
        state = _load_state(paths)

        def output_gone(stage: str) -> bool:
            """The folder a stage recorded has been deleted since (a user cleaning models/ or a version):
            the stage runs again, instead of a run that does nothing and names no model."""
            rec = state.get(stage, {})
            if stage == "curate" and rec.get("version"):
                return not (paths.versions_dir / rec["version"]).is_dir()
            if stage == "train" and rec.get("model"):
                return not (paths.models_dir / rec["model"]).is_dir()
            return False

        def due(stage: str, fingerprint: str) -> bool:
            if stage not in stages:
                return False
            if force or state.get(stage, {}).get("fingerprint") != fingerprint or output_gone(stage):
                return True
            summary["stages"][stage] = "skipped (unchanged)"
            return False

        def done(stage: str, fingerprint: str, **extra) -> None:
            state[stage] = {"fingerprint": fingerprint, "finished_at": datetime.now(UTC).isoformat(), **extra}
            _save_state(paths, state)
            summary["stages"][stage] = "ran"

        gen_fp = fp.generate_fingerprint(task)
        if due("generate", gen_fp):
            manifest = run_generate(task, quiet=quiet)
            keep_warnings("generate", manifest)
            summary["generate"] = {k: manifest.get(k) for k in ("counts", "cost_usd", "tokens") if k in manifest}
            done("generate", gen_fp)

        previous_version = _pointer(paths.latest_pointer)
        cur_fp = fp.curate_fingerprint(task)
        if due("curate", cur_fp):
            keep_warnings("curate", run_curate(task, quiet=quiet))
            version = _pointer(paths.latest_pointer)
            prev_dir = paths.versions_dir / previous_version if previous_version else None
            drift = compare_versions(prev_dir if prev_dir and prev_dir.exists() else None, paths.versions_dir / version)
            vdir = paths.versions_dir / version
            (vdir / "drift.md").write_text(drift_markdown(drift))
            (vdir / "drift.json").write_text(json.dumps(drift, indent=2, default=sorted))
            summary["drift"] = {
                k: drift[k] for k in ("previous", "current", "new_examples", "dropped_examples", "label_tvd")
            }
            summary["changed"] = summary["changed"] or drift["changed"]
            if not quiet:
                log(drift_markdown(drift))
            done("curate", cur_fp, version=version)

        version = _pointer(paths.latest_pointer)
        if version:
            train_fp = fp.train_fingerprint(task, version)
            if due("train", train_fp):
                keep_warnings("train", run_train(task, quiet=quiet, version=version))
                summary["changed"] = True
                done("train", train_fp, model=_pointer(paths.models_dir / "latest"))

        model = _pointer(paths.models_dir / "latest")
        if model:
            eval_fp = fp.evaluate_fingerprint(task, model)
            if due("evaluate", eval_fp):
                report = run_evaluate(task, quiet=quiet)
                summary["report"] = report.get("summary", report.get("headline"))
                done("evaluate", eval_fp)

        summary["pruned_versions"] = prune_versions(paths, keep)
        summary["version"] = _pointer(paths.latest_pointer)
        summary["model"] = _pointer(paths.models_dir / "latest")
    summary["wall_s"] = round(time.monotonic() - started, 2)
    return summary


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or task name.")
    parser.add_argument("-q", "--quiet", action="store_true", help="No progress; end with a one-line JSON summary (cron).")
    parser.add_argument("--keep", type=int, default=5, help="Dataset versions to keep (default 5).")
    parser.add_argument("--stages", default=",".join(STAGES), help="Comma-separated subset of the stages, in order.")
    parser.add_argument("--force", action="store_true", help="Run every stage even when unchanged.")


def main(args) -> int:
    from pipeline.errors import ConfigError

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.keep < 1:
        raise ConfigError(f"--keep {args.keep}: keep at least 1 version")
    task = load_task(args.task)
    summary = run_pipeline(task, quiet=args.quiet, keep=args.keep, stages=stages, force=args.force)
    if args.quiet:
        print(json.dumps(summary, default=str, separators=(",", ":")))
    else:
        ran = [s for s, v in summary["stages"].items() if v == "ran"]
        print(f"run: {task.name}: ran {', '.join(ran) or 'nothing'}; "
              f"{'changed' if summary['changed'] else 'nothing changed'} in {summary['wall_s']}s", file=sys.stdout)
    return 0 if summary["changed"] else EXIT_NOTHING_CHANGED
