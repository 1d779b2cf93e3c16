"""YAML as people write it: YAML 1.2's scalars on PyYAML's safe loader.

PyYAML follows YAML 1.1, which surprises in task files:

- ``1e-4`` is the *string* "1e-4" (1.1's float needs a dot). A typed field coerced it, but free
  mappings (``train.sft``, ``teacher.params``) passed the string on: SFTConfig accepted it and
  training stopped with a traceback, and an API would get "1e-1" for ``top_p``.
- ``yes``, ``no``, ``on``, ``off`` are booleans, so a yes/no task's ``labels: [yes, no]`` became
  ``[True, False]`` and ``gold_map: {yes: spam}`` a map from ``True``.
- ``012`` is octal 10 and ``1:30`` the sexagesimal 90.

YAML 1.2 (and JSON) read these as a float, strings, 12 and the string "1:30". This loader swaps
PyYAML's bool, int and float resolvers for YAML 1.2's core schema (the recipe PyYAML's issue tracker
gives; ruamel.yaml does 1.2 wholesale, but would be a second YAML library for three regular
expressions). Typed boolean fields still take ``yes``/``no``: pydantic reads those strings as booleans.
"""
from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL_TAG, _INT_TAG, _FLOAT_TAG = (f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float"))

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$")  # 1.1's "10_000" kept
_FLOAT = re.compile(r"""^(?:
     [-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.VERBOSE)


class Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans, integers and floats."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL_TAG, _INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Loader.add_implicit_resolver(_BOOL_TAG, _BOOL, list("tTfF"))
Loader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))  # before the float: "12" is an int
Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+0123456789."))


def _construct_int(loader: Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text[:2] in ("0o", "0x") else int(text.replace("_", ""))  # "012" is 12, not octal 10


Loader.add_constructor(_INT_TAG, _construct_int)


def load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2's scalars; raises ``yaml.YAMLError`` like it."""
    return yaml.load(text, Loader=Loader)
