"""Base classes for the public wire shapes.

Requests are strict: an unknown field is an error that names the field (``extra="forbid"``).
Responses and stored records are frozen and tolerate fields added later (``extra="ignore"``),
so an older reader can load a newer record.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class Request(BaseModel):
    """A request body or body fragment sent by a client."""

    model_config = ConfigDict(extra="forbid")


class Resource(BaseModel):
    """An object Corral returns or stores."""

    model_config = ConfigDict(extra="ignore", frozen=True)


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)]
MetadataPatch = Annotated[dict[MetadataKey, MetadataValue | None], Field(max_length=16)]
NonEmptyName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def apply_metadata_patch(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """Upsert string values, delete keys set to null: the API's metadata-patch rule."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
