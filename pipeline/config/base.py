"""The base model every config section uses."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, and field descriptions are the help text. A number
    where text belongs is its text: ``labels: [1, 2, 3, 4, 5]`` (star ratings) and ``gold_map: {0:
    negative}`` (a Hugging Face dataset's class ids) mean the strings, as the data files hold them."""

    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)


def as_text(value: object) -> str:
    """A data value as config text: ``true`` / ``false`` for booleans and for their "True" / "FALSE"
    spellings (JSON's and YAML's spelling; Python's str() and pandas' CSVs give "True"), a whole float
    as its integer (``1.0`` is "1": pandas writes an integer column that holds a missing value as
    floats, and such a file's class ids must still meet ``gold_map: {1: positive}``), ``str(value)``
    for everything else."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return text.lower() if text.lower() in ("true", "false") else text


def keys_as_text(mapping: object) -> object:
    """A mapping's boolean and number keys as ``as_text`` spells them (``gold_map: {true: spam}``, or
    ``True:``; ``1.0:`` is the key "1")."""
    if isinstance(mapping, dict):
        return {as_text(k) if isinstance(k, (bool, str, int, float)) else k: v for k, v in mapping.items()}
    return mapping

