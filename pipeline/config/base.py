"""The base model every config section uses."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, and field descriptions are the help text. A number
    where text belongs is its text: ``labels: [1, 2, 3, 4, 5]`` (star ratings) and ``gold_map: {0:
    negative}`` (a Hugging Face dataset's class ids) mean the strings, as the data files hold them."""

    model_config = ConfigDict(extra="forbid", validate_default=True, coerce_numbers_to_str=True)
