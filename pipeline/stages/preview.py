"""``distill preview <task> -n 3``: show the rendered prompts and what the whole run will cost.

Reads:  prompts/<task>/, its input source and eval.source; the price table (pipeline/data/prices.yaml,
        DISTILL_PRICES).
Writes: nothing; sends nothing.

It counts generate's requests and, separately, the teacher calls evaluate makes on eval.source.

The estimate counts ~4 characters per token plus OpenAI's chat overhead of 3 tokens per message and 3
to prime the reply (the OpenAI cookbook's ``num_tokens_from_messages``). Exact tokenizers for hosted
models are not available offline, so this is an estimate; completion tokens are an upper bound
(``max_tokens`` per request). An unknown model's cost is printed as unknown, never as 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from pipeline.config.task import TaskFolder, load_task
from pipeline.inputs import input_writing_variables, read_inputs, written_stand_in
from pipeline.pricing import price_for
from pipeline.prompts import PromptRenderer
from pipeline.records import Message

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
    """The estimate for the whole run, and the rendered answer prompts (for display)."""
    cfg = task.config
    answer_tokens, from_params = answer_tokens_for(task)
    prompt_tokens = completion_tokens = requests = 0
    rendered: list[list[Message]] = []
    extra_per_input = 0
    inputs = (read_inputs(cfg.inputs.source, task.path, renderer.input_variables())[0]
              if cfg.inputs.source is not None else [])
    written: list[dict] = []
    if cfg.inputs.generate is not None:
        gen = cfg.inputs.generate
        gen_params = gen.params or {**cfg.teacher.params, "temperature": 1.0}
        input_tokens, _ = max_completion_tokens(gen_params)
        tpl = renderer.template(gen.template)
        for variables in input_writing_variables(gen):
            msgs = [Message(role="user", content=renderer.render_template(tpl, variables))]
            if len(rendered) < SHOWN_WRITING:
                rendered.append(msgs)
            prompt_tokens += estimate_prompt_tokens(msgs)
            completion_tokens += input_tokens
            requests += 1
        # The inputs do not exist yet: count each as the longest text the teacher may write.
        written = [written_stand_in(gen, inputs, PLACEHOLDER)] * gen.count
        extra_per_input = input_tokens - estimate_text_tokens(PLACEHOLDER)
    for inp, extra in [(x, 0) for x in inputs] + [(x, extra_per_input) for x in written]:
        msgs = renderer.render(inp)
        rendered.append(msgs)
        prompt_tokens += estimate_prompt_tokens(msgs) + extra
        completion_tokens += answer_tokens
        requests += 1
    return _priced(task, requests, prompt_tokens, completion_tokens, not from_params), rendered


def _priced(task: TaskFolder, requests: int, prompt_tokens: int, completion_tokens: int, assumed: bool) -> Estimate:
    price = price_for(task.config.teacher.backend, task.config.teacher.model)
    cost = None if price is None else price.cost(prompt_tokens, completion_tokens)
    return Estimate(requests, prompt_tokens, completion_tokens, cost, assumed)


def estimate_evaluate(task: TaskFolder, renderer: PromptRenderer) -> Estimate | None:
    """The teacher calls `distill evaluate` adds: one per eval.source input (eval.limit of them),
    unless already cached. None when evaluate reads the held-out split, which asks nothing."""
    ev = task.config.eval
    if ev.source is None:
        return None
    rows = read_inputs(ev.source, task.path, renderer.input_variables(), "eval.source")[0][: ev.limit or None]
    answer_tokens, from_params = answer_tokens_for(task)
    prompt_tokens = sum(estimate_prompt_tokens(renderer.render({k: v for k, v in row.items() if k != ev.gold_field}))
                        for row in rows)
    return _priced(task, len(rows), prompt_tokens, answer_tokens * len(rows), not from_params)


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


def _prompt_key(messages) -> str:
    return json.dumps([[m.role, m.content] for m in messages])


def local_pace(task: TaskFolder) -> tuple[Pace, set[str]] | None:
    """The pace of this task's local teacher in its last generate run (a `--limit` trial will do),
    from the answers' own timings, the model's load not counted, and the prompts it answered; None for
    an API teacher (its pace is the provider's rate limit, which generate learns as it goes) or before
    any answer exists. A local teacher answers a batch at a time and gives each answer its batch's
    time, so the sum over the distinct batch times is the compute behind the answers (cached answers
    keep the time they took)."""
    from pipeline.paths import TaskPaths
    from pipeline.records import Record, read_jsonl

    cfg = task.config
    path = TaskPaths(task.name).generated_jsonl
    if cfg.teacher.backend not in LOCAL_BACKENDS or not path.is_file():
        return None
    mine = [r for r in read_jsonl(path, Record, strict=False)
            if r.teacher.backend == cfg.teacher.backend and r.teacher.model == cfg.teacher.model and r.latency_s]
    if not mine:
        return None
    return Pace(sum({r.latency_s for r in mine}) / len(mine), len(mine)), {_prompt_key(r.messages) for r in mine}


def time_line(task: TaskFolder, est: Estimate, rendered: list[list[Message]], ev: Estimate | None) -> str | None:
    """How long a local teacher will take at its measured pace (the prompts it has answered
    already left out), or how to measure it."""
    if task.config.teacher.backend not in LOCAL_BACKENDS or not est.requests:
        return None
    measured = local_pace(task)
    if measured is None:
        return (f"time: not measured yet; `distill generate {task.name} --limit 32` times this machine "
                "(its answers are kept for the full run)")
    pace, answered = measured
    todo = est.requests - sum(_prompt_key(m) in answered for m in rendered)
    evaluate = (f", and evaluate's {ev.requests:,} (fewer if cached) {pace.duration(ev.requests)}"
                if ev is not None and ev.requests else "")
    run = f"{pace.duration(todo)} for the {todo:,} requests not answered yet" if todo else "every request answered already"
    return (f"time: {run}{evaluate} "
            f"(at {pace.seconds_per_request:.2f} s a request, measured on {pace.answers:,} answers on this machine)")


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
    console.print(f"requests: {est.requests:,}")
    bound = " (assumed max_tokens; set teacher.params.max_tokens)" if est.assumed_max_tokens else " (upper bound: max_tokens)"
    if est.completion_tokens == 0 and est.requests:
        bound = " (the labels are scored in the prompt's pass: nothing is generated)"
    console.print(f"tokens: ~{est.prompt_tokens:,} prompt + {est.completion_tokens:,} completion{bound}")
    console.print(f"estimated cost: {cost_line(task, est)}")
    ev = estimate_evaluate(task, renderer)
    if ev is not None:
        console.print(f"evaluate (eval.source{f', eval.limit {cfg.eval.limit}' if cfg.eval.limit else ''}): "
                      f"{ev.requests:,} more teacher requests, ~{ev.prompt_tokens:,} prompt + "
                      f"{ev.completion_tokens:,} completion tokens, estimated cost: {cost_line(task, ev)}")
    if line := time_line(task, est, rendered, ev):
        console.print(escape(line))
    return 0
