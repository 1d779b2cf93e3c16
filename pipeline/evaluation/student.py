"""Run the trained student locally: batched greedy answers, per-request latency, throughput and
the confidence the router needs.

Reads:  a model folder from the train stage (config + weights + tokenizer with a chat template;
        a peft adapter folder works too).
Writes: nothing; returns a ``StudentRun``.

Timing: one warm-up call is made first and not counted (it pays for lazy initialisation).
Latency is measured one request at a time (batch size 1) on the first ``latency_samples``
prompts, the way one caller experiences it; throughput and the cost basis come from the batched
pass over all prompts. torch and transformers are imported inside functions (fast CLI start).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.records import Message


@dataclass
class StudentRun:
    texts: list[str]
    token_logprobs: list[list[float]]  # per answer: log P of each generated token (stop token included)
    label_logprobs: list[dict[str, float]] | None  # label tasks: log P(label string + stop | prompt)
    generate_s: float  # the batched pass, all prompts
    confidence_s: float  # scoring the label strings (label tasks), all prompts
    latencies_s: list[float] = field(default_factory=list)  # batch size 1, one per sampled prompt
    batch_size: int = 1
    max_new_tokens: int = 0
    latency_method: str = "single"  # "single": batch size 1 on a sample; "batch": each request's batch time

    @property
    def throughput_rps(self) -> float | None:
        return len(self.texts) / self.generate_s if self.generate_s > 0 else None

    @property
    def seconds_per_request(self) -> float | None:
        """Machine seconds one answer costs in batched serving."""
        return self.generate_s / len(self.texts) if self.texts else None

    @property
    def confidence_seconds_per_request(self) -> float:
        """What scoring the labels for the router's confidence adds per request (label tasks; for the
        others the confidence comes with the answer's own token logprobs)."""
        return self.confidence_s / len(self.texts) if self.texts else 0.0


def load_student(model_dir: Path):
    """(model, tokenizer) from a train-stage folder, in eval mode on the best device
    (``pipeline.devices``: CUDA in bf16 when present, else the CPU in float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.devices import placement_for

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists() and not (model_dir / "adapter_config.json").exists():
        raise ConfigError(f"{model_dir}: not a model folder (no config.json); pass --model a trained student's folder")
    where = placement_for(model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if (model_dir / "adapter_config.json").exists() and not (model_dir / "config.json").exists():
            from peft import AutoPeftModelForCausalLM

            model = where.place(AutoPeftModelForCausalLM.from_pretrained(model_dir, **where.from_pretrained_kwargs()))
        else:
            model = where.place(AutoModelForCausalLM.from_pretrained(model_dir, **where.from_pretrained_kwargs()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{model_dir}: cannot load the student ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not tokenizer.chat_template:
        raise ConfigError(f"{model_dir}: the tokenizer has no chat template; re-run `distill train` (it saves one)")
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts align there
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _stop_token_id(model, tokenizer) -> int:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos if eos is not None else tokenizer.eos_token_id


def _prompt_texts(tokenizer, prompts: Sequence[Sequence[Message]]) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [m.model_dump() for m in msgs], add_generation_prompt=True, tokenize=False
        )
        for msgs in prompts
    ]


def encode(tokenizer, texts: Sequence[str], device=None):
    """Templated prompts as one left-padded batch (load_student sets the padding side), on ``device``."""
    enc = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc if device is None else enc.to(device)


def _positions(mask):
    # explicit position ids, so left padding does not shift them
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _cache_kwarg(method) -> str:
    """transformers 5 renames ``past_key_values`` to ``cache`` (the old name is deprecated)."""
    import inspect

    return "cache" if "cache" in inspect.signature(method).parameters else "past_key_values"


def _generate_cache_kwarg() -> str:
    import transformers

    return "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def prefix_cache(model, enc):
    """The KV cache of every prompt token but the last: shared by the greedy answer and the label
    scores, so the prompt is read once for both."""
    import torch

    mask = enc["attention_mask"][:, :-1]
    with torch.inference_mode():
        out = model(input_ids=enc["input_ids"][:, :-1], attention_mask=mask, position_ids=_positions(mask),
                    use_cache=True, logits_to_keep=1)
    cache = out.get("cache")  # transformers 5's name for the output field
    return cache if cache is not None else out.past_key_values


def generate_batch(model, tokenizer, enc, max_new_tokens: int, cache=None) -> tuple[list[str], list[list[float]]]:
    """Greedy answers to an encoded batch, with each generated token's log-probability. ``cache``:
    a ``prefix_cache`` of this batch (it is consumed)."""
    import torch
    from transformers import GenerationConfig

    stop = _stop_token_id(model, tokenizer)
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    extra = {} if cache is None else {_generate_cache_kwarg(): cache}
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=gen_cfg, **extra)
    new_tokens = out.sequences[:, enc["input_ids"].shape[1]:]
    # raw logits, not the processed scores: greedy needs no processors, and we want true probabilities
    logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)
    chosen = logprobs.gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
    answers, token_lps = [], []
    for row, lps in zip(new_tokens.tolist(), chosen.tolist()):
        end = row.index(stop) + 1 if stop in row else len(row)
        answers.append(tokenizer.decode(row[:end], skip_special_tokens=True).strip())
        token_lps.append(lps[:end])
    return answers, token_lps


def score_label_strings(model, tokenizer, enc, labels: Sequence[str], cache=None) -> list[dict[str, float]]:
    """log P(label string, then the stop token | prompt) for every prompt of an encoded batch and
    every label: the probability that the label is the student's whole answer. The prompt's cache
    (``prefix_cache``; consumed) is repeated for each label, so K labels cost K short passes over
    the label tokens, not K passes over the prompt. Memory: batch x K x label length x vocabulary."""
    import torch

    stop = _stop_token_id(model, tokenizer)
    label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] + [stop] for label in labels]
    k, width = len(label_ids), max(len(lab) for lab in label_ids)
    pad = tokenizer.pad_token_id
    cache = prefix_cache(model, enc) if cache is None else cache
    mask = enc["attention_mask"]
    rows = len(mask) * k  # row b*k + j: prompt b, then label j
    last = enc["input_ids"][:, -1:].repeat_interleave(k, 0)
    # the prompt's last token, then the label; padded on the right, where it cannot change the label's logits
    dev = mask.device
    ids = torch.cat([last, torch.tensor([label_ids[r % k] + [pad] * (width - len(label_ids[r % k]))
                                         for r in range(rows)], device=dev)], dim=1)
    lab_mask = torch.tensor([[1] * len(label_ids[r % k]) + [0] * (width - len(label_ids[r % k])) for r in range(rows)],
                            device=dev)
    with torch.inference_mode():
        cache.batch_repeat_interleave(k)
        logprobs = model(
            input_ids=ids,
            attention_mask=torch.cat([mask.repeat_interleave(k, 0), lab_mask], dim=1),
            position_ids=_positions(mask)[:, -1:].repeat_interleave(k, 0) + torch.arange(width + 1, device=dev),
            **{_cache_kwarg(model.forward): cache},
        ).logits.float().log_softmax(-1)  # logprobs[r, t] predicts label token t
    return [
        {labels[j]: sum(logprobs[b * k + j, t, tok].item() for t, tok in enumerate(lab)) for j, lab in enumerate(label_ids)}
        for b in range(len(mask))
    ]


def run_student(
    model_dir: Path,
    prompts: Sequence[Sequence[Message]],
    *,
    max_new_tokens: int,
    batch_size: int,
    labels: Sequence[str] | None = None,
    latency_samples: int = 32,
    on_batch=None,
) -> StudentRun:
    """Answer every prompt (batched, greedy), score the label strings for label tasks, and time
    single requests on the first ``latency_samples`` prompts."""
    model, tokenizer = load_student(model_dir)
    texts = _prompt_texts(tokenizer, prompts)
    if not texts:
        return StudentRun([], [], [] if labels else None, 0.0, 0.0, [], batch_size, max_new_tokens)
    generate_batch(model, tokenizer, encode(tokenizer, texts[:1], model.device), 1)  # warm-up, not timed

    answers: list[str] = []
    token_lps: list[list[float]] = []
    label_lps: list[dict[str, float]] | None = [] if labels else None
    batch_times: list[float] = []
    confidence_s = 0.0
    for start in range(0, len(texts), batch_size):
        enc = encode(tokenizer, texts[start : start + batch_size], model.device)
        t0 = time.perf_counter()
        if labels:  # one pass over the prompts, shared by the answer and the label scores
            shared = prefix_cache(model, enc)
            a, lp = generate_batch(model, tokenizer, enc, max_new_tokens, cache=copy.deepcopy(shared))
            t1 = time.perf_counter()
            label_lps += score_label_strings(model, tokenizer, enc, labels, cache=shared)
            confidence_s += time.perf_counter() - t1
        else:
            a, lp = generate_batch(model, tokenizer, enc, max_new_tokens)
            t1 = time.perf_counter()
        batch_times.append(t1 - t0)
        answers += a
        token_lps += lp
        if on_batch:
            on_batch(len(answers), len(texts))

    if latency_samples > 0:
        latencies = []
        for text in texts[:latency_samples]:
            t0 = time.perf_counter()
            generate_batch(model, tokenizer, encode(tokenizer, [text], model.device), max_new_tokens)
            latencies.append(time.perf_counter() - t0)
    else:  # each request waits for its whole batch
        latencies = [t for start, t in zip(range(0, len(texts), batch_size), batch_times)
                     for _ in texts[start : start + batch_size]]
    return StudentRun(answers, token_lps, label_lps, sum(batch_times), confidence_s, latencies, batch_size,
                      max_new_tokens, "single" if latency_samples > 0 else "batch")


def time_label_scoring(score, prompt_texts: Sequence[str], *, batch_size: int, latency_samples: int,
                       on_batch=None) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """Run ``score(texts) -> [{label: logprob}]`` over every prompt in batches, then one prompt at a
    time on the first ``latency_samples``: (scores, batch times, single-request latencies). The
    same procedure times the student and a local teacher, so their costs compare like for like."""
    score(list(prompt_texts[:1]))  # warm-up, not timed
    scores: list[dict[str, float]] = []
    batch_times: list[float] = []
    for start in range(0, len(prompt_texts), batch_size):
        t0 = time.perf_counter()
        scores += score(list(prompt_texts[start:start + batch_size]))
        batch_times.append(time.perf_counter() - t0)
        if on_batch:
            on_batch(len(scores), len(prompt_texts))
    return scores, batch_times, single_latencies(score, prompt_texts[:latency_samples])


def single_latencies(score, prompt_texts: Sequence[str]) -> list[float]:
    """Seconds per call of ``score([text])``, one prompt at a time: what one caller waits."""
    latencies = []
    for text in prompt_texts:
        t0 = time.perf_counter()
        score([text])
        latencies.append(time.perf_counter() - t0)
    return latencies


def paired_batch_times(first, second, texts_first: Sequence[str], texts_second: Sequence[str], *,
                       batch_size: int) -> tuple[list[float], list[float]]:
    """Time two scorers on the same requests batch by batch, interleaved, the order alternating
    (first then second, then second then first), so that load that drifts during the measurement
    slows both alike; each is warmed up first, untimed. (first's batch times, second's)."""
    first(list(texts_first[:1]))
    second(list(texts_second[:1]))
    times: tuple[list[float], list[float]] = ([], [])
    jobs = ((first, texts_first, times[0]), (second, texts_second, times[1]))
    for i, start in enumerate(range(0, len(texts_first), batch_size)):
        for score, texts, out in (jobs if i % 2 == 0 else jobs[::-1]):
            t0 = time.perf_counter()
            score(list(texts[start:start + batch_size]))
            out.append(time.perf_counter() - t0)
    return times


def paired_ratio(first_times: Sequence[float], second_times: Sequence[float]) -> float | None:
    """How many times longer ``first`` takes than ``second``: the median over the paired batches of
    their ratio. Each pair ran the same requests back to back, so a burst of load on the machine
    (another process, the host) that slows one batch of either moves that pair's ratio alone, where
    it moved a ratio of sums whole. Measured on the demo (2026-12-08, 6 repeats of 16 paired batches
    of 16 on this 2-core machine): a ratio of sums over the first 4 batches read 3.69-5.27x, over 16
    4.07-5.40x, this median over 16 4.50-4.97x."""
    import statistics

    ratios = [a / b for a, b in zip(first_times, second_times) if b > 0]
    return statistics.median(ratios) if ratios else None


def label_scorer(model_dir: Path, prompts: Sequence[Sequence[Message]], labels: Sequence[str]):
    """(score(texts) -> [{label: logprob}], the prompts as the student's texts): a label student served
    as a classifier, every label's log-probability by the rule it was trained with
    (pipeline/label_scoring.py). (None, []) for no prompts."""
    from pipeline.label_scoring import label_completion_ids, student_label_logprobs

    model, tokenizer = load_student(model_dir)
    texts = _prompt_texts(tokenizer, prompts)
    if not texts:
        return None, []
    first = [m.model_dump() for m in prompts[0]]
    label_ids = [label_completion_ids(tokenizer, first, label) for label in labels]
    return (lambda batch: student_label_logprobs(model, tokenizer, batch, label_ids, labels)), texts


def run_student_labels(model_dir: Path, prompts: Sequence[Sequence[Message]], labels: Sequence[str], *,
                       batch_size: int, latency_samples: int = 32, on_batch=None, scorer=None) -> StudentRun:
    """A label student served as a classifier: every label's log-probability by the rule it was
    trained with (pipeline/label_scoring.py), the answer being the most probable label. One prompt
    pass per request; no text is generated. ``scorer``: ``label_scorer``'s result for these prompts,
    when the caller loaded the student already (evaluate times it again beside the teacher)."""
    score, texts = scorer or label_scorer(model_dir, prompts, labels)
    if not texts:
        return StudentRun([], [], [], 0.0, 0.0, [], batch_size, 0)
    scores, batch_times, latencies = time_label_scoring(
        score, texts, batch_size=batch_size, latency_samples=latency_samples, on_batch=on_batch)
    answers = [max(s, key=s.get) for s in scores]
    return StudentRun(answers, [[] for _ in answers], scores, sum(batch_times), 0.0, latencies, batch_size, 0,
                      "single" if latency_samples > 0 else "batch")
