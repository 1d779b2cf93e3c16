"""SFTConfig from three layers: safe defaults < the task's ``train.sft`` < ``--set key=value``.

Every SFTConfig field can be set; unknown names and bad values are ConfigErrors naming where they
came from. Defaults are chosen for a CPU: no bf16/fp16 unless CUDA is there (TRL's own default
turns bf16 on, which on a CPU is slow and changes the numerics).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from pipeline import yaml_io
from pipeline.errors import ConfigError


def parse_set_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["learning_rate=1e-4", "max_steps=20"]`` -> {"learning_rate": 1e-4, "max_steps": 20}.
    Values are read as YAML, so numbers, booleans, lists and null work as they do in task.yaml."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=1e-4")
        try:
            out[key] = yaml_io.load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def sft_field_names() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig) if f.init}


def check_sft_keys(values: dict[str, Any], source: str, known: set[str] | None = None) -> None:
    known = known or sft_field_names()
    for key in values:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: '{key}' is not an SFTConfig field{hint}; see TRL's SFTConfig docs")


def sft_scalar_fields() -> dict[str, str]:
    """SFTConfig's fields that take a number or a boolean and no text: name -> "int", "float" or "bool"."""
    import types

    from trl import SFTConfig

    out = {}
    for f in dataclasses.fields(SFTConfig):
        allowed = set(f.type.__args__) if isinstance(f.type, types.UnionType) else {f.type}
        if allowed & {int, float} and str not in allowed:
            out[f.name] = "float" if float in allowed else "int"
        elif bool in allowed and allowed <= {bool, type(None)}:
            out[f.name] = "bool"
    return out


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def check_sft_scalars(values: dict[str, Any], source: str, scalars: dict[str, str] | None = None) -> dict[str, Any]:
    """``values`` with ``yes``/``no``/``on``/``off`` read as booleans in SFTConfig's boolean fields, where
    YAML 1.2 leaves them text (``bf16: no`` would be the string "no", which is true). Text in a number
    or boolean field (``learning_rate: 1e-4x``) is refused in one line: SFTConfig takes it as it is and
    training fails with a traceback once the model has loaded."""
    scalars = sft_scalar_fields() if scalars is None else scalars
    out = dict(values)
    for key, value in values.items():
        if key not in scalars or not isinstance(value, str):
            continue
        if scalars[key] == "bool":
            if value.strip().lower() not in _BOOL_WORDS:
                raise ConfigError(f"{source}: {key}: {value!r} is not a boolean; write true or false")
            out[key] = _BOOL_WORDS[value.strip().lower()]
        else:
            example = "1e-4" if scalars[key] == "float" else "20"
            raise ConfigError(f"{source}: {key}: {value!r} is not a number; write it as one, e.g. {key}: {example}")
    return out


# TRL's default is 1024. Ours is twice that: a row longer than max_length loses its answer and is
# dropped (a label task) or cut (a text task), and a polarity set of whole reviews (IMDb-length: a
# few percent of them pass 1,024 tokens) should train on every row without a setting touched. Padding
# is to the longest row of a batch, so the cap costs nothing where rows are short; a batch of 16 rows
# of 2,048 tokens took a 6-layer SmolLM2 student 10.6 GB for a label step on a CPU.
DEFAULT_MAX_LENGTH = 2048


def cpu_safe_defaults(output_dir: Path, *, quiet: bool) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return {
        "output_dir": str(output_dir),
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "fp16": False,
        "use_cpu": not cuda,
        "report_to": "none",
        "logging_steps": 10,
        "save_total_limit": 2,
        "dataloader_pin_memory": cuda,
        # TRL turns activation checkpointing on by default: it saves GPU memory at ~30% more compute,
        # a bad trade on a CPU, where memory is plentiful and compute is the bottleneck.
        "gradient_checkpointing": cuda,  # renamed by _current_names where transformers has the new name
        "disable_tqdm": quiet,
        "max_length": DEFAULT_MAX_LENGTH,
    }


# transformers 5 renamed these; the old name still works but warns on every run (a FutureWarning in
# the run's output), and is ignored when the new one is set too, so a user's old name is renamed.
_RENAMED = {"gradient_checkpointing": "activation_checkpointing",
            "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs"}


def _current_names(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the fields this transformers renamed under their new names (when it has them)."""
    known = sft_field_names()
    return {(_RENAMED[k] if k in _RENAMED and _RENAMED[k] in known else k): v for k, v in values.items()}


def build_sft_config(
    output_dir: Path, task_sft: dict[str, Any], overrides: dict[str, Any], *, task_file: str, quiet: bool = False
):
    """The SFTConfig for this run. ``task_file`` names task.yaml in error messages."""
    from trl import SFTConfig

    check_sft_keys(task_sft, f"{task_file}: train.sft")
    check_sft_keys(overrides, "--set")
    scalars = sft_scalar_fields()
    task_sft = check_sft_scalars(task_sft, f"{task_file}: train.sft", scalars)
    overrides = check_sft_scalars(overrides, "--set", scalars)
    defaults = _current_names(cpu_safe_defaults(output_dir, quiet=quiet))
    merged = {**defaults, **_current_names(task_sft), **_current_names(overrides)}
    try:
        return SFTConfig(**merged)
    except (TypeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:300]
        raise ConfigError(f"{task_file}: train.sft / --set: SFTConfig rejected the settings: {first}") from None


def lora_config(lora: dict[str, Any] | None, task_file: str):
    """peft.LoraConfig from ``train.lora`` (None when unset)."""
    if not lora:
        return None
    from peft import LoraConfig

    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{task_file}: train.lora: {' '.join(str(exc).split())[:300]}") from None
