"""``teacher:`` — which model answers, how, and within what limits. Read by the generate stage."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipeline.config.base import Section

Backend = Literal["openai", "anthropic", "vllm", "hf"]

# Sent when task.yaml has no teacher.params. Kept rather than dropped so that tasks which relied on
# it keep their cache keys (a changed default would re-ask, and re-pay, every answer); instead
# validate and preview print it, and generate warns when answers stop at its max_tokens.
DEFAULT_PARAMS = {"temperature": 0.0, "max_tokens": 64}


class BudgetConfig(Section):
    """Parameters that control when a run stops on spend. Reaching a cap stops cleanly; re-run to resume."""

    max_cost_usd: float | None = Field(None, ge=0, description="Stop before spending more than this (USD).")
    max_requests: int | None = Field(None, ge=0, description="Stop after this many new (uncached) requests.")
    max_tokens: int | None = Field(None, ge=0, description="Stop after this many prompt+completion tokens.")


class TeacherConfig(Section):
    """Parameters that control the teacher model and its sampling."""

    backend: Backend = Field("hf", description="openai | anthropic | vllm (in-process) | hf (embedded transformers).")
    model: str = Field("smollm2-135m-instruct", description="Model name, or a local path for hf/vllm.")
    base_url: str | list[str] | None = Field(
        None, description="OpenAI-compatible server URL(s); a list spreads load across replicas."
    )
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key (default OPENAI_API_KEY / ANTHROPIC_API_KEY)."
    )
    params: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_PARAMS),
        description="Sampling parameters sent as-is (temperature, top_p, max_tokens, seed, stop...); when unset, "
        "temperature 0.0 and max_tokens 64.",
    )
    top_logprobs: int | None = Field(
        None, ge=0, le=20, description="Keep the teacher's top-k token logprobs (OpenAI allows up to 20)."
    )
    concurrency: int = Field(
        512, ge=1, description="Most requests in flight (and open connections). Within it the number adapts: it "
        "grows while latency stays flat and backs off on 429s and timeouts; the request rate itself is learnt "
        "from the provider's rate-limit headers and 429s and paced.",
    )
    requests_per_minute: float | None = Field(None, gt=0, description="Starting RPM limit; learnt from headers when unset.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Starting TPM limit; learnt from headers when unset.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout for one request, in seconds.")
    max_retries: int = Field(
        8, ge=0, description="Retries on 5xx, timeouts, connection errors and malformed bodies (429s are waited out)."
    )
    retry_initial_s: float = Field(0.5, gt=0, description="First retry backoff in seconds; doubles per retry, with jitter.")
    retry_max_s: float = Field(60.0, gt=0, description="Longest backoff between two retries, in seconds.")
    batch_size: int = Field(16, ge=1, description="Prompts per forward pass for the in-process backends (hf, vllm).")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm only: GPUs to shard the model over.")
    budget: BudgetConfig = Field(default_factory=BudgetConfig)

    @property
    def params_defaulted(self) -> bool:
        """True when task.yaml sets no params, so DEFAULT_PARAMS are sent."""
        return "params" not in self.model_fields_set

    def params_note(self) -> str | None:
        """One line saying what is sent when the task does not choose max_tokens, or None."""
        if self.params_defaulted:
            return (f"teacher.params is not set: the default {DEFAULT_PARAMS} is sent, so answers are cut at "
                    f"{DEFAULT_PARAMS['max_tokens']} tokens; set teacher.params.max_tokens")
        if not any(k in self.params for k in ("max_tokens", "max_completion_tokens", "max_new_tokens")):
            return "teacher.params has no max_tokens: the provider's own default length applies"
        return None

    @field_validator("params")
    @classmethod
    def _params_are_sampling_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        for reserved in ("messages", "model", "logprobs", "top_logprobs", "stream"):
            if reserved in v:
                raise ValueError(f"'{reserved}' is set by the pipeline, not in params; remove it")
        return v

    @model_validator(mode="after")
    def _anthropic_has_no_logprobs(self) -> TeacherConfig:
        if self.backend == "anthropic" and self.top_logprobs:
            raise ValueError(
                "the Anthropic Messages API returns no logprobs; remove top_logprobs or use an openai/vllm/hf teacher"
            )
        return self
