"""The base of every config section: unknown fields are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section; a field it does not know is an error naming it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
