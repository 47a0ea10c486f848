"""Admin API request models. Unknown fields are refused: a misspelt `forced` must not
silently promote without force, nor `weigth` end a canary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _AdminRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterInPlace(_AdminRequest):
    """`POST /admin/adapters/{name}/versions` as JSON: a directory already copied to
    `<store>/<name>/<version>`, validated where it is."""

    version: str = Field(min_length=1, max_length=64)


class PromoteRequest(_AdminRequest):
    version: str = Field(min_length=1, max_length=64)
    force: bool = False
    dataset: str | None = Field(None, min_length=1, max_length=128)


class CanaryRequest(_AdminRequest):
    version: str | None = Field(None, min_length=1, max_length=64)
    weight: float = Field(ge=0.0, le=1.0, description="share of the adapter's requests; 0 ends")
