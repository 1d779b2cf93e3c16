"""YAML as people write numbers: ``1e-4`` is a float.

PyYAML follows YAML 1.1, whose float needs a dot ("1.0e-4"), so ``learning_rate: 1e-4`` in
task.yaml, or ``--set learning_rate=5e-6``, came back as the *string* "1e-4". A typed field
coerced it, but free mappings (``train.sft``, ``teacher.params``) passed the string on: SFTConfig
accepted it and training then stopped with a traceback, and an API would get "1e-1" for ``top_p``.
YAML 1.2 (and JSON) read these as floats; this loader adds YAML 1.2's float forms to PyYAML's safe
loader (the recipe PyYAML's issue tracker gives; ruamel.yaml does 1.2 wholesale, but would be a
second YAML library for one regular expression).
"""
from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2's core-schema float, plus 1.1's forms PyYAML already knew (sexagesimal, .inf, .nan)
_FLOAT = re.compile(r"""^(?:
     [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE)


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-4``); raises ``yaml.YAMLError`` like it."""
    return yaml.load(text, Loader=Loader)
