"""``distill preview <task> -n 3``: show the rendered prompts and what the whole run will cost.

Reads:  prompts/<task>/, its input source and eval.source; the price table (pipeline/data/prices.yaml,
        DISTILL_PRICES); data/<task>/cache.sqlite, when it exists (lookups only).
Writes: nothing; sends nothing.

It counts generate's requests and, separately, the teacher calls evaluate makes on eval.source; those
the cache has answered are counted apart and cost nothing (the request hashes generate would send).

The estimate counts ~4 characters per token plus OpenAI's chat overhead of 3 tokens per message and 3
to prime the reply (the OpenAI cookbook's ``num_tokens_from_messages``). Exact tokenizers for hosted
models are not available offline, so this is an estimate; completion tokens are an upper bound
(``max_tokens`` per request). An unknown model's cost is printed as unknown, never as 0.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.config.task import TaskFolder, load_task
from pipeline.inputs import read_inputs, written_stand_in
from pipeline.paths import TaskPaths
from pipeline.pricing import price_for
from pipeline.prompts import PromptRenderer
from pipeline.records import Message
from pipeline.teachers.cache import AnswerCache

HELP = "Print the rendered prompts for the first inputs and estimate requests, tokens and cost."

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3
DEFAULT_MAX_TOKENS = 256  # assumed when params set no max_tokens; the preview says so
LOCAL_BACKENDS = ("hf", "vllm")  # priced by machine time, not per token
PLACEHOLDER = "<an input the teacher writes>"
SHOWN_WRITING = 3  # requests that write inputs kept for display (the estimate counts them all)


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_prompt_tokens(messages: list[Message]) -> int:
    return sum(TOKENS_PER_MESSAGE + estimate_text_tokens(m.content) for m in messages) + TOKENS_REPLY_PRIMING


def max_completion_tokens(params: dict) -> tuple[int, bool]:
    """(tokens per answer, whether it came from the params rather than the default)."""
    for key in ("max_tokens", "max_completion_tokens", "max_new_tokens"):
        if params.get(key):
            return int(params[key]), True
    return DEFAULT_MAX_TOKENS, False


@dataclass
class Estimate:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    assumed_max_tokens: bool
    cached: int = 0  # of the requests, those the task's cache has answered: the tokens and cost leave them out
    measured: dict | None = None  # the requests to ask, priced as the cached answers to the run's prompts went

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def answer_tokens_for(task: TaskFolder) -> tuple[int, bool]:
    """Tokens per answer: none when the teacher scores the labels instead of writing (a local
    teacher on a label task, pipeline/label_scoring.py), else the max_tokens bound."""
    from pipeline.stages.generate import scoring_labels

    if scoring_labels(task):
        return 0, True
    return max_completion_tokens(task.config.teacher.params)


def estimate_run(task: TaskFolder, renderer: PromptRenderer) -> tuple[Estimate, list[list[Message]]]:
    """The estimate for the whole run, and the rendered answer prompts (for display). Requests the
    task's cache has answered already (an earlier run, a ``--limit`` trial, the prompts an edit left
    as they were) are counted apart: a rerun pays for none of them, so the tokens and cost are the
    rest's."""
    from pipeline.stages.generate import answer_requests, writing_params, writing_requests, written_inputs

    cfg = task.config
    answer_tokens, from_params = answer_tokens_for(task)
    tally = _Tally()
    rendered: list[list[Message]] = []
    inputs = (read_inputs(cfg.inputs.source, task.path, renderer.input_variables())[0]
              if cfg.inputs.source is not None else [])
    answering: list[tuple[dict, int, str]] = [(x, 0, "given") for x in inputs]  # (input, extra tokens, kind)
    writing, input_tokens = _Measured(), 0
    with _stored(task) as cache:
        if cfg.inputs.generate is not None:
            gen = cfg.inputs.generate
            input_tokens, _ = max_completion_tokens(writing_params(task))
            variables, jobs = writing_requests(task, renderer)
            stored = cache.get_many(j.req.request_hash for j in jobs) if cache else {}
            for job in jobs:
                if len(rendered) < SHOWN_WRITING:
                    rendered.append(job.req.messages)
                prompt = estimate_prompt_tokens(job.req.messages)
                tally.add(job.req.request_hash in stored, prompt, input_tokens)
                writing.add(stored.get(job.req.request_hash), prompt)
            # An input not written yet counts as the longest text the teacher may write.
            stand_in = written_stand_in(gen, inputs, PLACEHOLDER)
            extra = input_tokens - estimate_text_tokens(PLACEHOLDER)
            for v, job in zip(variables, jobs):
                wrote = written_inputs(task, [v], [job], stored)
                if wrote:
                    answering.append((wrote[0], 0, "written"))
                elif job.req.request_hash not in stored:  # an empty written input is never answered
                    answering.append((stand_in, extra, "stand_in"))
        messages = [renderer.render(x) for x, _, _ in answering]
        jobs = answer_requests(task, messages)
        answered = cache.get_many(j.req.request_hash for j in jobs) if cache else {}
        measured = _Measured()
        for msgs, (_, extra, kind), job in zip(messages, answering, jobs):
            rendered.append(msgs)
            prompt = estimate_prompt_tokens(msgs) + extra
            tally.add(job.req.request_hash in answered, prompt, answer_tokens)
            measured.add(answered.get(job.req.request_hash), prompt, kind)
    est = tally.priced(task, not from_params)
    est.measured = expected_cost(task, measured, writing, (answer_tokens, input_tokens))
    return est, rendered


@dataclass
class _Measured:
    """One kind of request (answering inputs, or writing them), against the answers the cache holds
    for the run's own prompts (a ``--limit`` trial's): their real token counts against this module's
    estimate, to price the requests still to ask as those went."""

    answers: int = 0
    actual_prompt: int = 0
    estimated_prompt: int = 0
    completion: int = 0
    to_ask: int = 0
    to_ask_prompt: int = 0
    written: int = 0  # of the answers: those to inputs the teacher wrote
    written_prompt: int = 0  # their real prompt tokens
    stand_ins: int = 0  # of to_ask: requests for inputs the teacher has not written yet
    stand_in_prompt: int = 0  # their estimated prompt tokens (the input at its max_tokens bound)

    def add(self, response, estimated_prompt: int, input_kind: str = "given") -> None:
        """``input_kind``: "given", "written" (by the teacher) or "stand_in" (not written yet)."""
        if response is None:
            self.to_ask += 1
            self.to_ask_prompt += estimated_prompt
            if input_kind == "stand_in":
                self.stand_ins += 1
                self.stand_in_prompt += estimated_prompt
        elif response.usage.prompt_tokens:
            self.answers += 1
            self.actual_prompt += response.usage.prompt_tokens
            self.estimated_prompt += estimated_prompt
            self.completion += response.usage.completion_tokens
            if input_kind == "written":
                self.written += 1
                self.written_prompt += response.usage.prompt_tokens

    def priced(self, completion_bound: int) -> tuple[int, int]:
        """(prompt, completion) tokens of the requests to ask: as the cached answers went when there
        are some (their prompts' real/estimated token ratio, their mean completion; a request for an
        input not written yet at the real prompt size of those for written ones), else as estimated
        (the completion at its bound)."""
        if not self.answers:
            return self.to_ask_prompt, self.to_ask * completion_bound
        ratio = self.actual_prompt / max(self.estimated_prompt, 1)
        if self.written:
            prompt = (self.to_ask_prompt - self.stand_in_prompt) * ratio + self.stand_ins * self.written_prompt / self.written
        else:
            prompt = self.to_ask_prompt * ratio
        return round(prompt), round(self.to_ask * self.completion / self.answers)


def expected_cost(task: TaskFolder, answering: _Measured, writing: _Measured, bounds: tuple[int, int]) -> dict | None:
    """{"answers", "prompt_tokens", "completion_tokens", "cost_usd"} for what is left to ask, the
    answering and the writing requests each priced as its own cached answers went
    (``_Measured.priced``). ``bounds``: their completion bounds (max_tokens). None for a local teacher
    (priced by machine time), a model without a price, or nothing cached or left to ask."""
    cfg = task.config.teacher
    price = price_for(cfg.backend, cfg.model)
    measured = answering.answers + writing.answers
    if not measured or not (answering.to_ask or writing.to_ask) or price is None or cfg.backend in LOCAL_BACKENDS:
        return None
    (a_prompt, a_completion), (w_prompt, w_completion) = answering.priced(bounds[0]), writing.priced(bounds[1])
    prompt, completion = a_prompt + w_prompt, a_completion + w_completion
    return {"answers": measured, "prompt_tokens": prompt, "completion_tokens": completion,
            "cost_usd": price.cost(prompt, completion)}


@dataclass
class _Tally:
    """Requests, and the tokens of those the cache has not answered."""

    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, is_cached: bool, prompt_tokens: int, completion_tokens: int) -> None:
        self.requests += 1
        if is_cached:
            self.cached += 1
        else:
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def priced(self, task: TaskFolder, assumed: bool) -> Estimate:
        est = _priced(task, self.requests, self.prompt_tokens, self.completion_tokens, assumed)
        est.cached = self.cached
        return est


@contextmanager
def _stored(task: TaskFolder) -> Iterator[AnswerCache | None]:
    """The task's answer cache, read only for lookups; None before anything was asked (preview
    creates no file)."""
    path = TaskPaths(task.name).cache_db
    if not path.is_file():
        yield None
        return
    with AnswerCache(path) as cache:
        yield cache


def _priced(task: TaskFolder, requests: int, prompt_tokens: int, completion_tokens: int, assumed: bool) -> Estimate:
    price = price_for(task.config.teacher.backend, task.config.teacher.model)
    cost = None if price is None else price.cost(prompt_tokens, completion_tokens)
    return Estimate(requests, prompt_tokens, completion_tokens, cost, assumed)


def estimate_evaluate(task: TaskFolder, renderer: PromptRenderer) -> Estimate | None:
    """The teacher calls `distill evaluate` adds: one per eval.source input it reads (eval.limit of
    them, the same sample), those the cache has answered counted apart. None when evaluate reads the
    held-out split, which asks nothing."""
    from pipeline.evaluation.eval_inputs import read_eval_source
    from pipeline.stages.generate import answer_requests

    if task.config.eval.source is None:
        return None
    rows, _, _ = read_eval_source(task, task.config.eval.limit)
    answer_tokens, from_params = answer_tokens_for(task)
    messages = [renderer.render(row) for row in rows]
    jobs = answer_requests(task, messages)
    with _stored(task) as cache:
        present = cache.present(j.req.request_hash for j in jobs) if cache else set()
    tally = _Tally()
    for msgs, job in zip(messages, jobs):
        tally.add(job.req.request_hash in present, estimate_prompt_tokens(msgs), answer_tokens)
    return tally.priced(task, not from_params)


@dataclass
class Pace:
    """A local teacher's measured seconds of compute per request on this machine."""

    seconds_per_request: float
    answers: int  # how many answers measured it

    def duration(self, requests: int) -> str:
        return f"about {duration_text(self.seconds_per_request * requests)}"


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if minutes < 10 else f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def local_pace(task: TaskFolder) -> Pace | None:
    """The pace of this task's local teacher in its last generate run (a `--limit` trial will do),
    from the answers' own timings, the model's load not counted; None for an API teacher (its pace is
    the provider's rate limit, which generate learns as it goes) or before any answer exists. A local
    teacher answers a batch at a time and gives each answer its batch's time, so the sum over the
    distinct batch times is the compute behind the answers (cached answers keep the time they took)."""
    from pipeline.records import Record, read_jsonl

    cfg = task.config
    path = TaskPaths(task.name).generated_jsonl
    if cfg.teacher.backend not in LOCAL_BACKENDS or not path.is_file():
        return None
    mine = [r for r in read_jsonl(path, Record, strict=False)
            if r.teacher.backend == cfg.teacher.backend and r.teacher.model == cfg.teacher.model and r.latency_s]
    if not mine:
        return None
    return Pace(sum({r.latency_s for r in mine}) / len(mine), len(mine))


def time_line(task: TaskFolder, est: Estimate, ev: Estimate | None) -> str | None:
    """How long a local teacher will take at its measured pace (the requests the cache has answered
    left out), or how to measure it."""
    if task.config.teacher.backend not in LOCAL_BACKENDS or not est.requests:
        return None
    pace = local_pace(task)
    if pace is None:
        return (f"time: not measured yet; `distill generate {task.name} --limit 32` times this machine "
                "(its answers are kept for the full run)")
    todo = est.requests - est.cached
    run = f"{pace.duration(todo)} for the {todo:,} requests not answered yet" if todo else "every request answered already"
    evaluate = ""
    if ev is not None and ev.requests:
        ev_todo = ev.requests - ev.cached
        evaluate = f", and evaluate's {ev_todo:,} {pace.duration(ev_todo)}" if ev_todo else ", and evaluate's too"
    return (f"time: {run}{evaluate} "
            f"(at {pace.seconds_per_request:.2f} s a request, measured on {pace.answers:,} answers on this machine)")


def batch_note(task: TaskFolder, est: Estimate) -> str:
    """What `distill generate --batch` would cost instead, where the provider discounts batches."""
    cfg = task.config.teacher
    price = price_for(cfg.backend, cfg.model)
    if cfg.backend in LOCAL_BACKENDS or price is None or price.batch_discount >= 1 or est.cost_usd is None:
        return ""
    return f" (with `distill generate {task.name} --batch`: ${est.cost_usd * price.batch_discount:,.4f}, answered within 24 h)"


def cost_line(task: TaskFolder, est: Estimate) -> str:
    """The cost as the user should read it: unknown is not $0, and a local teacher costs machine time."""
    cfg = task.config
    if est.cost_usd is None:
        return "unknown (add the model to a price file named by DISTILL_PRICES)"
    if cfg.teacher.backend in LOCAL_BACKENDS:
        rate = cfg.eval.teacher_price_per_hour
        machine = (f"its machine time at ${rate}/h (eval.teacher_price_per_hour), known once it has run"
                   if rate is not None else "set eval.teacher_price_per_hour to price its machine time")
        return f"no per-token price ({cfg.teacher.backend} runs on your machine); {machine}"
    return f"${est.cost_usd:,.4f}"


def add_arguments(parser) -> None:
    parser.add_argument("task", help="Task folder (prompts/<task>) or task name.")
    parser.add_argument("-n", type=int, default=3, help="How many inputs to show (default 3).")


def main(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel

    if args.n < 0:
        from pipeline.errors import ConfigError

        raise ConfigError(f"-n {args.n}: must be 0 or more")
    console = Console(highlight=False)
    task = load_task(args.task)
    renderer = PromptRenderer.for_task(task)
    est, rendered = estimate_run(task, renderer)
    cfg = task.config
    shown = rendered[: args.n]
    titles = [f"input {i}" for i in range(1, len(shown) + 1)]
    gen = cfg.inputs.generate
    if gen is not None:  # the requests that write inputs, then the real inputs' prompts, or one written input's
        n_writing = min(SHOWN_WRITING, gen.count)
        writing, answers = rendered[:n_writing][: args.n], rendered[n_writing:]
        real = answers[: len(answers) - gen.count][: args.n]
        shown = writing + (real or answers[-gen.count:][: min(1, args.n)])
        titles = [f"writes input {i}" for i in range(1, len(writing) + 1)] + (
            [f"input {i}" for i in range(1, len(real) + 1)] if real else ["answers an input"])
    for title, msgs in zip(titles, shown):
        body = "\n".join(f"[bold]{m.role}[/bold]: {escape(m.content)}" for m in msgs)
        console.print(Panel(body, title=title, expand=False))
    console.print(f"teacher: {cfg.teacher.backend} / {cfg.teacher.model}")
    console.print(f"params sent: {escape(str(cfg.teacher.params))}" + (" (the default)" if cfg.teacher.params_defaulted else ""))
    from pipeline.stages.generate import scoring_labels

    if cfg.teacher.params_note() and scoring_labels(task) is None:  # a scored label samples nothing
        console.print(f"[yellow]note:[/yellow] {escape(cfg.teacher.params_note())}")
    from pipeline.stages.cross_checks import labels_after_input_warning, unnamed_labels_warning

    for check in (unnamed_labels_warning, labels_after_input_warning):
        if warning := check(task, renderer):
            console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"requests: {est.requests:,}{cached_note(est)}")
    bound = " (assumed max_tokens; set teacher.params.max_tokens)" if est.assumed_max_tokens else " (upper bound: max_tokens)"
    if scoring_labels(task) and est.requests:
        bound = " (the labels are scored in the prompt's pass: nothing is generated)"
    if est.requests and est.cached < est.requests:
        rest = " for the requests to ask" if est.cached else ""
        console.print(f"tokens: ~{est.prompt_tokens:,} prompt + {est.completion_tokens:,} completion{rest}{bound}")
        console.print(f"estimated cost: {cost_line(task, est)}{batch_note(task, est)}")
        if m := est.measured:
            console.print(f"as the {m['answers']:,} answers in the cache went (their real token counts): "
                          f"~{m['prompt_tokens']:,} prompt + {m['completion_tokens']:,} completion tokens, "
                          f"about ${m['cost_usd']:,.4f}")
    ev = estimate_evaluate(task, renderer)
    if ev is not None:
        what = (f"~{ev.prompt_tokens:,} prompt + {ev.completion_tokens:,} completion tokens"
                f"{' for those to ask' if ev.cached else ''}, estimated cost: {cost_line(task, ev)}"
                if ev.cached < ev.requests else "")
        console.print(f"evaluate (eval.source{f', eval.limit {cfg.eval.limit}' if cfg.eval.limit else ''}): "
                      f"{ev.requests:,} more teacher requests{cached_note(ev)}{', ' if what else ''}{what}")
    if line := time_line(task, est, ev):
        console.print(escape(line))
    return 0


def cached_note(est: Estimate) -> str:
    """How many of the requests the cache answers (free, nothing sent), when any."""
    if not est.cached:
        return ""
    if est.cached == est.requests:
        return " (all answered already: the cache serves them, nothing is sent or paid)"
    return f" ({est.cached:,} answered already, served by the cache; {est.requests - est.cached:,} to ask)"
