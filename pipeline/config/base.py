"""The base model every config section uses."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section: unknown keys are errors, and field descriptions are the help text."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
