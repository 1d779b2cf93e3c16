"""``distill generate <task>``: ask the teacher for an answer to every input.

Reads   prompts/<task>/ (task.yaml, *.j2, examples.yaml, the inputs file) and data/<task>/cache.sqlite
Writes  data/<task>/cache.sqlite            every answer, committed as it arrives (resume = re-run)
        data/<task>/generated/inputs.jsonl  the inputs answered (teacher-written with inputs.generate)
        data/<task>/generated/generated.jsonl  one Record per answered request, in input order
        data/<task>/generated/manifest.json teacher, params, template hashes, counts, tokens, cost,
                                            wall time, retries, 429s

With ``inputs.generate`` the teacher first writes inputs (seeds x grid, one request per
combination and variant), then answers them, after the real inputs of ``inputs.source`` when both
are set; both passes go through the same execution layer
(pipeline/teachers/executor.py), cache and budget. A budget stop or a failure still writes
everything answered so far, then exits non-zero.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipeline.config import TaskFolder, load_task
from pipeline.errors import ConfigError, DistillError, LockedError
from pipeline.inputs import input_writing_variables, read_inputs
from pipeline.paths import TaskPaths
from pipeline.prompts import PromptRenderer
from pipeline.records import Message, Record, TeacherInfo, write_jsonl
from pipeline.stages.cross_checks import eval_overlap_line, overlap_matters, unnamed_labels_warning
from pipeline.stages.generate_report import (
    cut_answers_warning,
    cut_written_inputs_warning,
    generate_manifest,
    summary_line,
)
from pipeline.stages.notices import warn
from pipeline.teachers.base import TeacherResponse, make_request
from pipeline.teachers.budget import Budget, price_or_refuse
from pipeline.teachers.cache import AnswerCache
from pipeline.teachers.executor import ExecutionStats, Executor, RequestToAnswer, RetriesExhausted
from pipeline.teachers.progress import GenerateProgress

HELP = "Ask the teacher for every input's answer (cached, resumable, rate-limited, within budget)."


def add_arguments(parser) -> None:
    parser.add_argument("task", help="task folder (prompts/<task>) or its name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary (for cron)")
    parser.add_argument("--batch", action="store_true", help="use the provider's batch API (half price, slower)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="answer only the first N inputs")


def main(args) -> int:
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be a positive number of inputs")
    task = load_task(args.task)
    run_generate(task, quiet=args.quiet, batch=args.batch, limit=args.limit)
    if args.limit is not None and not args.quiet:  # a trial run: look at the answers before paying for all
        print(trial_answers(task), file=sys.stderr)
        if line := trial_outlook(task):
            print(line, file=sys.stderr)
    return 0


def trial_outlook(task: TaskFolder) -> str | None:
    """After a --limit trial: how long the whole run will take at a local teacher's pace, or what an
    API teacher's remaining requests will cost as the trial's answers went."""
    from pipeline.stages.preview import LOCAL_BACKENDS, estimate_evaluate, estimate_run, time_line

    renderer = PromptRenderer.for_task(task)
    est, _ = estimate_run(task, renderer)
    if task.config.teacher.backend not in LOCAL_BACKENDS:
        if (m := est.measured) is None:
            return None
        return (f"cost: about ${m['cost_usd']:,.4f} for the {est.requests - est.cached:,} requests not answered yet, "
                f"as these {m['answers']:,} answers went (at most ${est.cost_usd:,.4f} by max_tokens); "
                f"`distill preview {task.name}` has the details")
    try:
        ev = estimate_evaluate(task, renderer)
    except DistillError:  # eval.source's own problem is validate's and evaluate's to name, not the trial's
        ev = None
    return time_line(task, est, ev)


def trial_answers(task: TaskFolder, shown: int = 5) -> str:
    """The first answers of a --limit run, each parsed as curate will parse it, and how many parse:
    a prompt that makes the teacher answer prose instead of a label shows here, not after a full run."""
    from pipeline.curation.screen import Screener
    from pipeline.records import read_jsonl

    kind = task.config.output.kind
    records = list(read_jsonl(TaskPaths(task.name).generated_jsonl, Record))
    screener = Screener(task)
    parsed = [(r, screener.parse(r)) for r in records]
    lines = [f"answers (the first {min(shown, len(records))} of {len(records)}, parsed as output.kind {kind}):"]
    for record, p in parsed[:shown]:
        got = f"-> {p.value!r}"[:80] if p.reason is None else f"-> NOT PARSED ({p.reason}: {p.detail})"
        lines.append(f"  {record.completion.strip()[:70]!r} {got}")
    ok = sum(p.reason is None for _, p in parsed)
    lines.append(f"{ok} of {len(records)} answers parse as {kind}"
                 + ("" if ok == len(records) else "; fix the prompt (user.j2, system.j2, examples.yaml) before a full run"))
    return "\n".join(lines)


@contextmanager
def generate_lock(paths: TaskPaths):
    """Two generate runs of one task would pay twice for the answers both have in flight."""
    path = paths.root / "generate.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{path}: another `distill generate {paths.task}` is running; wait for it to finish") from None
        yield


class _Session:
    """One run's shared state: cache, budget, and the counters of both passes."""

    def __init__(self, task: TaskFolder, cache: AnswerCache, *, quiet: bool, batch: bool):
        cfg = task.config.teacher
        self.task, self.cfg, self.cache, self.quiet, self.batch = task, cfg, cache, quiet, batch
        self.budget = Budget(cfg.budget, price_or_refuse(cfg.backend, cfg.model, cfg.budget), batch=batch)
        self.passes: dict[str, dict[str, Any]] = {}
        self.new_hashes: set[str] = set()
        self.batch_answered: set[str] = set()
        self.failed: dict[str, str] = {}
        self._fresh: dict[str, TeacherResponse] = {}  # the live pass's new answers, already in memory

    def answer(self, name: str, jobs: list[RequestToAnswer]) -> dict[str, TeacherResponse]:
        """Answer every job (cache first), record the pass's counters, return {hash: response}."""
        start = time.perf_counter()
        stats = self._answer_batch(jobs) if self.batch else self._answer_live(name, jobs)
        self.failed.update(stats.failed)
        fresh, self._fresh = self._fresh, {}
        answers = {**self.cache.get_many(j.req.request_hash for j in jobs if j.req.request_hash not in fresh), **fresh}
        self.batch_answered |= self.cache.batch_answered(answers)
        self.passes[name] = {**stats.as_dict(), "requests": len({j.req.request_hash for j in jobs}),
                             "answered": len(answers), "wall_s": round(time.perf_counter() - start, 3)}
        return answers

    def _answer_live(self, name: str, jobs: list[RequestToAnswer]) -> ExecutionStats:
        from pipeline.teachers import make_teacher

        probe = Executor(_NoTeacher(), self.cfg, self.cache, self.budget)
        todo = probe.pending(jobs)
        # Everything cached, or the budget is spent: don't even load the teacher (a local model is slow to load).
        if not todo or self.budget.stopped:
            probe.stats.budget_stopped = self.budget.stopped
            return probe.stats
        teacher = make_teacher(self.cfg)

        async def go() -> ExecutionStats:
            ex = None
            try:
                with GenerateProgress(name, len(todo), quiet=self.quiet, priced=self.budget.price is not None) as bar:
                    ex = Executor(teacher, self.cfg, self.cache, self.budget, on_answer=bar.answer)
                    stats = await ex.run(todo)
            finally:
                if ex is not None:
                    self.new_hashes.update(ex.fresh)
                    self._fresh.update(ex.fresh)
                await teacher.aclose()
            stats.cached = probe.stats.cached
            return stats

        return asyncio.run(go())

    def _answer_batch(self, jobs: list[RequestToAnswer]) -> ExecutionStats:
        try:
            from pipeline.teachers.batch import run_batch
        except ModuleNotFoundError as exc:
            if exc.name != "pipeline.teachers.batch":
                raise
            raise ConfigError("--batch: the batch API support (pipeline/teachers/batch/) is not installed") from None
        probe = Executor(_NoTeacher(), self.cfg, self.cache, self.budget)
        todo = probe.pending(jobs)
        admitted = [j for j in todo if self.budget.admit(*j.estimated_tokens)]
        start = time.perf_counter()
        payloads = {j.req.request_hash: j.payload for j in admitted}
        counts = asyncio.run(run_batch(self.cfg, [j.req for j in admitted], self.cache, quiet=self.quiet,
                                       payloads=payloads)) if admitted else {}
        stats = probe.stats
        stats.wall_s = time.perf_counter() - start
        stats.requests_sent = int(counts.get("submitted", 0)) + int(counts.get("resubmitted", 0))
        stats.failed = dict(counts.get("failed_requests") or {})
        stats.budget_stopped = self.budget.stopped
        for job in admitted:
            resp = self.cache.get(job.req.request_hash)
            usage = (resp.usage.prompt_tokens, resp.usage.completion_tokens) if resp else None
            cost = self.budget.settle(job.estimated_tokens, usage)
            if resp:
                self.new_hashes.add(job.req.request_hash)
                stats.new_answers += 1
                stats.prompt_tokens += usage[0]
                stats.completion_tokens += usage[1]
                if stats.cost_usd is not None:
                    stats.cost_usd = None if cost is None else stats.cost_usd + cost
        return stats


SCORING_BACKENDS = ("hf",)


def scoring_labels(task: TaskFolder) -> list[str] | None:
    """The label set, when the task's answers are scored rather than generated: a label task whose
    teacher runs in-process (one prefill per input gives every label's probability exactly)."""
    cfg = task.config
    if cfg.output.kind == "label" and cfg.teacher.backend in SCORING_BACKENDS:
        return list(cfg.output.labels or [])
    return None


class _NoTeacher:
    backend = model = "none"


def _record(session: _Session, job: RequestToAnswer, inputs: dict, resp: TeacherResponse) -> Record:
    cfg, h = session.cfg, job.req.request_hash
    price = session.budget.price
    batch = h in session.batch_answered
    return Record(
        id=h[:16], task=session.task.name, inputs=inputs, messages=job.req.messages, completion=resp.text,
        finish_reason=resp.finish_reason,
        teacher=TeacherInfo(backend=cfg.backend, model=cfg.model, params=job.req.params, top_logprobs=job.req.top_logprobs),
        logprobs=resp.logprobs, label_logprobs=resp.label_logprobs, usage=resp.usage,
        cost_usd=None if price is None else price.cost(resp.usage.prompt_tokens, resp.usage.completion_tokens, batch=batch),
        latency_s=resp.latency_s, request_hash=h, cached=h not in session.new_hashes,
    )


def _teacher_written_inputs(session: _Session, renderer: PromptRenderer,
                            limit: int | None) -> tuple[list[dict[str, Any]], str | None]:
    """Pass 1: the teacher writes one input per (seed x grid combination, variant). Returns the inputs
    and a warning when some stopped at max_tokens (cut mid-sentence, yet paid for: kept, and said)."""
    variables, jobs = writing_requests(session.task, renderer, limit)
    answers = session.answer("writing inputs", jobs)
    inputs = written_inputs(session.task, variables, jobs, answers)
    cut = sum(1 for r in (answers.get(j.req.request_hash) for j in jobs)
              if r is not None and r.text.strip() and r.finish_reason == "length")
    return inputs, cut_written_inputs_warning(session.task, writing_params(session.task), cut, len(inputs))


def request_jobs(task: TaskFolder, messages: list[list[Message]], params: dict, top_logprobs: int | None,
                 variants: list[int] | None = None, labels: list[str] | None = None) -> list[RequestToAnswer]:
    """One request per prompt, as the cache keys it (the teacher's backend and model, the params)."""
    cfg = task.config.teacher
    out = []
    for i, msgs in enumerate(messages):
        req, payload = make_request(cfg.backend, cfg.model, msgs, params, top_logprobs, variants[i] if variants else 0,
                                    labels)
        out.append(RequestToAnswer(req, payload))
    return out


def answer_requests(task: TaskFolder, messages: list[list[Message]]) -> list[RequestToAnswer]:
    """The requests that answer the task's prompts: a scored label request when the teacher can
    score (``scoring_labels``), else a generation with the teacher's params and top-k."""
    labels = scoring_labels(task)
    if labels:
        return request_jobs(task, messages, {}, None, labels=labels)
    return request_jobs(task, messages, task.config.teacher.params, task.config.teacher.top_logprobs)


def writing_requests(task: TaskFolder, renderer: PromptRenderer,
                     limit: int | None = None) -> tuple[list[dict[str, Any]], list[RequestToAnswer]]:
    """``inputs.generate``'s requests (one per seed x grid combination and variant) and their variables."""
    gen = task.config.inputs.generate
    template = renderer.template(gen.template)
    variables = input_writing_variables(gen)[: limit or None]
    messages = [[Message(role="user", content=renderer.render_template(template, v))] for v in variables]
    return variables, request_jobs(task, messages, writing_params(task), None, [v["variant"] for v in variables])


def writing_params(task: TaskFolder) -> dict[str, Any]:
    """``inputs.generate.params``, else the teacher's params at temperature 1 (varied inputs)."""
    gen = task.config.inputs.generate
    return gen.params if gen.params is not None else {**task.config.teacher.params, "temperature": 1.0}


def written_inputs(task: TaskFolder, variables: list[dict[str, Any]], jobs: list[RequestToAnswer],
                   answers: dict[str, TeacherResponse]) -> list[dict[str, Any]]:
    """The inputs the teacher wrote: each non-empty answer, with its seed and grid variables."""
    field_name = task.config.inputs.generate.field
    inputs = []
    for v, job in zip(variables, jobs):
        resp = answers.get(job.req.request_hash)
        if resp is not None and resp.text.strip():
            inputs.append({field_name: resp.text.strip(), **{k: val for k, val in v.items() if k != "variant"}})
    return inputs


def _answer_records(session: _Session, renderer: PromptRenderer, inputs: list[dict[str, Any]],
                    name: str = "answering") -> list[Record]:
    jobs = answer_requests(session.task, [renderer.render(x) for x in inputs])
    answers = session.answer(name, jobs)
    records, seen = [], set()
    for x, job in zip(inputs, jobs):
        h = job.req.request_hash
        if h in answers and h not in seen:
            seen.add(h)
            records.append(_record(session, job, x, answers[h]))
    return records


def content_free_inputs(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task's prompt with no content (Zhao et al. 2021): every input field set to "N/A", then
    "", then "[MASK]". The teacher's answers show the label bias of the prompt itself."""
    from pipeline.curation.soft_labels import CONTENT_FREE_INPUTS

    fields = list(inputs[0])
    return [{f: value for f in fields} for value in CONTENT_FREE_INPUTS]


def answer_inputs(task: TaskFolder, inputs: list[dict], *, quiet: bool = True) -> list[Record]:
    """Render and answer ``inputs`` (from the cache where possible): one Record per input, in order."""
    paths = TaskPaths(task.name)
    with AnswerCache(paths.cache_db) as cache:
        session = _Session(task, cache, quiet=quiet, batch=False)
        renderer = PromptRenderer.for_task(task)
        jobs = answer_requests(session.task, [renderer.render(x) for x in inputs])
        answers = session.answer("answering", jobs)
        error = _incomplete(session, sum(j.req.request_hash in answers for j in jobs), len(inputs))
        if error is not None:
            raise error
        return [_record(session, job, x, answers[job.req.request_hash]) for x, job in zip(inputs, jobs)]


def _incomplete(session: _Session, answered: int, total: int) -> DistillError | None:
    """Why the run is incomplete (a budget cap, prompts that failed every retry), or None."""
    if session.budget.stopped:
        return session.budget.exceeded(answered, total)
    if session.failed:
        example = next(iter(session.failed.values()))
        return RetriesExhausted(
            f"{len(session.failed)} prompts still failed after {session.cfg.max_retries} retries (last: {example}); "
            "everything else is saved; re-run to retry only these"
        )
    return None


def _warn_before_asking(task: TaskFolder, renderer: PromptRenderer, inputs: list[dict[str, Any]], quiet: bool,
                        trial: bool) -> list[str]:
    """What would make the run's answers useless, said before the first request: inputs that are eval
    inputs (a warning; an error when all of them are, except in a --limit trial: curate's
    decontamination would drop every answer), a label the prompt never offers (a warning)."""
    warnings: list[str] = []
    if overlap_matters(task) and inputs:
        try:
            eval_rows, _ = read_inputs(task.config.eval.source, task.path, renderer.input_variables(), "eval.source")
        except DistillError:
            eval_rows = []  # curate reports an unreadable eval source; nothing to compare here
        found = eval_overlap_line(task, inputs, eval_rows)
        if found and found[1] and not trial:
            raise ConfigError(found[0])
        warn(found and found[0], warnings, quiet)
    warn(unnamed_labels_warning(task, renderer), warnings, quiet)
    return warnings


def run_generate(task: TaskFolder, *, quiet: bool = False, batch: bool = False, limit: int | None = None) -> dict:
    """Answer every input of ``task``; returns the manifest written to generated/manifest.json."""
    paths = TaskPaths(task.name)
    cfg = task.config
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    # A fatal error (a bad key, a template error, Ctrl-C) propagates before anything is rewritten:
    # the previous generated.jsonl stays, and every answer received is in the cache for the re-run.
    with generate_lock(paths), AnswerCache(paths.cache_db) as cache:
        session = _Session(task, cache, quiet=quiet, batch=batch)
        renderer = PromptRenderer.for_task(task)
        inputs, blank = (read_inputs(cfg.inputs.source, task.path, renderer.input_variables())
                         if cfg.inputs.source is not None else ([], None))
        inputs = inputs[: limit or None]
        written_cut = None
        if cfg.inputs.generate is not None and not (limit and len(inputs) >= limit):  # the real ones first
            written, written_cut = _teacher_written_inputs(session, renderer, limit - len(inputs) if limit else None)
            inputs += written
        write_jsonl(paths.generated_dir / "inputs.jsonl", inputs)
        warnings = _warn_before_asking(task, renderer, inputs, quiet, trial=limit is not None)
        warn(blank, warnings, quiet)
        warn(written_cut, warnings, quiet)
        # After a budget stop this still runs: it asks nothing more, but collects the cached answers.
        records = _answer_records(session, renderer, inputs)
        if cfg.output.kind == "label" and cfg.output.calibrate in ("content_free", "em") and inputs:
            write_jsonl(paths.content_free_jsonl, _answer_records(session, renderer, content_free_inputs(inputs),
                                                                 "content-free inputs"))
        error = _incomplete(session, len(records), len(inputs))
        write_jsonl(paths.generated_jsonl, records)
        manifest = generate_manifest(task, session, records, started, time.perf_counter() - t0, batch, limit, error)
        manifest["counts"]["inputs"] = len(inputs)
        if not quiet:
            print(summary_line(task, manifest), file=sys.stderr)
        warn(cut_answers_warning(task, manifest), warnings, quiet)
        manifest["warnings"] = warnings
        (paths.generated_dir / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    if error is not None:
        raise error
    return manifest
