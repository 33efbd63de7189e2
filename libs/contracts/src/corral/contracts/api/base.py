"""Base classes for the public wire shapes.

Requests are strict: an unknown field is an error that names the field (``extra="forbid"``).
Responses and stored records are frozen and tolerate fields added later (``extra="ignore"``),
so an older reader can load a newer record.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from corral.contracts.api.errors import invalid


class Request(BaseModel):
    """A request body or body fragment sent by a client."""

    model_config = ConfigDict(extra="forbid")


class Resource(BaseModel):
    """An object Corral returns or stores."""

    model_config = ConfigDict(extra="ignore", frozen=True)


METADATA_MAX_PAIRS: Final = 16
METADATA_MAX_KEY_CHARS: Final = 64
METADATA_MAX_VALUE_CHARS: Final = 512
INVALID_METADATA: Final = "invalid_metadata"
"""The ``error.details.error_code`` of metadata over the limits (the SDK raises ``BetaInvalidMetadataError``)."""


def metadata_problems(metadata: dict[str, str | None], *, patch: bool = False) -> list[str]:
    """Each way ``metadata`` breaks the API's limits (16 pairs, keys 1-64 characters, values up to 512),
    in words that name the key; empty when it is within them. A ``patch`` (null deletes a key) is not
    held to the pair count: the metadata it leaves behind is (see ``apply_metadata_patch``)."""
    problems: list[str] = []
    if not patch and len(metadata) > METADATA_MAX_PAIRS:
        problems.append(f"metadata has {len(metadata)} keys; at most {METADATA_MAX_PAIRS} are allowed")
    for key, value in metadata.items():
        if not key:
            problems.append("metadata keys cannot be empty")
        elif len(key) > METADATA_MAX_KEY_CHARS:
            problems.append(
                f"metadata key {key[:20]!r}... is {len(key)} characters; keys are at most {METADATA_MAX_KEY_CHARS}"
            )
        if value is not None and len(value) > METADATA_MAX_VALUE_CHARS:
            problems.append(
                f"metadata value of {key[:METADATA_MAX_KEY_CHARS]!r} is {len(value)} characters; "
                f"values are at most {METADATA_MAX_VALUE_CHARS}"
            )
    return problems


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    problems = metadata_problems(dict(value))
    if problems:
        raise ValueError("; ".join(problems))
    return value


def _check_metadata_patch(value: dict[str, str | None]) -> dict[str, str | None]:
    problems = metadata_problems(value, patch=True)
    if problems:
        raise ValueError("; ".join(problems))
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]
MetadataPatch = Annotated[dict[str, str | None], AfterValidator(_check_metadata_patch)]
NonEmptyName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def apply_metadata_patch(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """Upsert string values, delete keys set to null: the API's metadata-patch rule.

    Raises:
        ApiError: 400 ``invalid_metadata`` when the result would hold more than 16 pairs.
    """
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > METADATA_MAX_PAIRS:
        raise invalid(
            f"metadata: this update would leave {len(merged)} keys; at most {METADATA_MAX_PAIRS} are allowed "
            "(set a key to null to delete it)",
            error_code=INVALID_METADATA,
        )
    return merged
