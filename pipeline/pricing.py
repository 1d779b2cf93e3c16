"""Token prices: a bundled table (pipeline/data/prices.yaml) that a user's file overrides.

An unknown model's price is ``None``: shown as unknown, never as 0, and never counted as free
against a cost cap.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from pipeline import yaml_io
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    batch_discount: float = 1.0

    def cost(self, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        usd = (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) / 1e6
        return usd * (self.batch_discount if batch else 1.0)


FREE = Price(0.0, 0.0)


def _parse(data: object, source: str) -> tuple[dict[str, Price], set[str]]:
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise ConfigError(f"{source}: expected 'models: {{name: {{input: .., output: ..}}}}'")
    prices = {}
    for name, entry in (data.get("models") or {}).items():
        try:
            prices[str(name)] = Price(
                float(entry["input"]), float(entry["output"]), float(entry.get("batch_discount", 1.0))
            )
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"{source}: models.{name}: needs numeric 'input' and 'output' (USD per 1M tokens)") from None
    return prices, set(data.get("free_backends") or [])


@lru_cache(maxsize=8)
def _load(override: str | None) -> tuple[dict[str, Price], frozenset[str]]:
    bundled = resources.files("pipeline").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    prices, free = _parse(yaml_io.load(bundled), "pipeline/data/prices.yaml")
    if override:
        path = Path(override)
        try:
            user = yaml_io.load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the price file named by DISTILL_PRICES ({exc.strerror})") from None
        except yaml.YAMLError:
            raise ConfigError(f"{path}: invalid YAML in the price file named by DISTILL_PRICES") from None
        user_prices, user_free = _parse(user, str(path))
        prices.update(user_prices)
        free |= user_free
    return prices, frozenset(free)


def price_for(backend: str, model: str) -> Price | None:
    """The model's price, ``FREE`` for local backends, or ``None`` when unknown."""
    prices, free = _load(os.environ.get("DISTILL_PRICES"))
    if backend in free:
        return FREE
    if model in prices:
        return prices[model]
    # Dated snapshots ("gpt-4o-mini-2024-07-18") take the price of their family.
    for name in sorted(prices, key=len, reverse=True):
        if model.startswith(name + "-"):
            return prices[name]
    return None


def cost_usd(backend: str, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float | None:
    price = price_for(backend, model)
    return None if price is None else price.cost(prompt_tokens, completion_tokens, batch=batch)
