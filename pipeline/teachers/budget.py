"""Spending caps for one run: ``max_cost_usd``, ``max_requests``, ``max_tokens``.

A request is admitted only if the spend so far, plus what requests in flight may still cost,
plus this one's worst case stays within every cap; so a cap is never overshot by the requests in
flight. Worst case = the prompt's estimated tokens + ``max_tokens`` from the params. Cached
answers are free. Caps count this run only: a re-run with the same caps resumes from the cache
and may spend as much again. An unknown price is never free: a cost cap with no price refuses to
start.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.config.teacher import BudgetConfig
from pipeline.errors import BudgetExceeded, ConfigError
from pipeline.pricing import Price, price_for

# Without max_tokens in the params a completion's length is unbounded; assume this many.
DEFAULT_COMPLETION_ESTIMATE = 1024


def estimate_prompt_tokens(chars: int) -> int:
    """English runs about 4 characters per token with GPT-style BPEs; 3 errs towards the cap."""
    return chars // 3 + 1


_CAP_KEYS = ("max_completion_tokens", "max_tokens", "max_new_tokens")


def has_completion_cap(params: dict) -> bool:
    return any(isinstance(params.get(key), int) for key in _CAP_KEYS)


def completion_cap(params: dict) -> int:
    for key in _CAP_KEYS:
        if isinstance(params.get(key), int):
            return params[key]
    return DEFAULT_COMPLETION_ESTIMATE


def price_or_refuse(backend: str, model: str, budget: BudgetConfig) -> Price | None:
    price = price_for(backend, model)
    if price is None and budget.max_cost_usd is not None:
        raise ConfigError(
            f"teacher.budget.max_cost_usd is set but the price of '{model}' ({backend}) is unknown, and an unknown "
            f"price is never counted as free; add it to a YAML file (models: {{{model}: {{input: <USD/1M>, "
            "output: <USD/1M>}}) and set DISTILL_PRICES=<that file>, or remove max_cost_usd"
        )
    return price


@dataclass
class Budget:
    """Admission control for one run. ``admit`` before a request, ``settle`` after it."""

    caps: BudgetConfig
    price: Price | None
    batch: bool = False
    requests: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    _reserved_requests: int = 0
    _reserved_tokens: int = 0
    _reserved_cost: float = 0.0
    stopped: str | None = field(default=None)

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.cost(prompt_tokens, completion_tokens, batch=self.batch) if self.price else 0.0

    def admit(self, prompt_tokens: int, completion_tokens: int) -> bool:
        """Reserve one request's worst case; False (and ``stopped`` set) when a cap would be passed."""
        if self.stopped:
            return False
        caps = self.caps
        toks = prompt_tokens + completion_tokens
        cost = self._cost(prompt_tokens, completion_tokens)
        if caps.max_requests is not None and self.requests + self._reserved_requests + 1 > caps.max_requests:
            self.stopped = f"max_requests={caps.max_requests}"
        elif caps.max_tokens is not None and self.tokens + self._reserved_tokens + toks > caps.max_tokens:
            self.stopped = f"max_tokens={caps.max_tokens}"
        elif caps.max_cost_usd is not None and self.cost_usd + self._reserved_cost + cost > caps.max_cost_usd:
            self.stopped = f"max_cost_usd={caps.max_cost_usd}"
        if self.stopped:
            return False
        self._reserved_requests += 1
        self._reserved_tokens += toks
        self._reserved_cost += cost
        return True

    def settle(self, reserved: tuple[int, int], actual: tuple[int, int] | None) -> float | None:
        """Replace a reservation by what the answer really used (None: the request failed, so it is
        released; retries are paid only once). Returns the answer's cost (None if the price is unknown)."""
        self._reserved_requests -= 1
        self._reserved_tokens -= sum(reserved)
        self._reserved_cost -= self._cost(*reserved)
        if actual is None:
            return None
        self.requests += 1
        self.tokens += sum(actual)
        cost = self._cost(*actual)
        self.cost_usd += cost
        return cost if self.price else None

    def exceeded(self, answered: int, total: int) -> BudgetExceeded:
        spent = f"${self.cost_usd:.4f}" if self.price else "cost unknown"
        return BudgetExceeded(
            f"budget teacher.budget.{self.stopped} reached: stopped after {self.requests} new requests, "
            f"{self.tokens} tokens, {spent}; {answered} of {total} prompts are answered and saved; "
            "re-run to resume (raise the cap to finish in one go)"
        )
