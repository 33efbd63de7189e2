"""Request bodies: parse the JSON ourselves and validate it with the contracts' params models.

Every failure is a 400 ``invalid_request_error`` whose message names the field, in the form
``events.0.content: Field required`` or ``bogus: Extra inputs are not permitted``. Union branch
names that pydantic puts in error locations (``user.message``, ``ModelConfigParams``...) are left
out, so the path is the one the client wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from corral.contracts.api.base import INVALID_METADATA
from corral.contracts.api.errors import invalid

M = TypeVar("M", bound=BaseModel)

MAX_REPORTED_ERRORS: Final = 5

# Errors that only say "this union branch wants another kind of value"; dropped when another
# branch got further into the same value, since that branch's errors are the useful ones.
_SHAPE_ERRORS: Final = frozenset(
    {"string_type", "model_type", "model_attributes_type", "dict_type", "list_type", "int_type", "bool_type"}
)
_FRIENDLY: Final = {
    "model_type": "Input should be an object",
    "model_attributes_type": "Input should be an object",
    "dict_type": "Input should be an object",
}


# An escaped UTF-16 surrogate (``\ud800``-``\udfff``); json pairs a high one with the low one after
# it into one character and leaves an unpaired one in the string, which nothing downstream can encode.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (the SDK sends one on archive and friends).

    Raises:
        ApiError: 400, the body is not JSON or not an object.
    """
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid(f"request body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f"request body must be a JSON object, not {type(data).__name__}")
    if _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(data, [])
        if where is not None:
            path, char = where
            at = ".".join(str(p) for p in path) or "body"
            raise invalid(
                f"{at}: contains an unpaired UTF-16 surrogate (\\u{ord(char):04x}); a surrogate escape must "
                "be a high one (\\ud800-\\udbff) followed by a low one (\\udc00-\\udfff)"
            )
    return data


def _lone_surrogate(value: Any, path: list[int | str]) -> tuple[list[int | str], str] | None:
    """Where the first string (key or value) holding an unpaired surrogate is, and that surrogate."""
    if isinstance(value, str):
        found = _surrogate_in(value)
        return (path, found) if found is not None else None
    if isinstance(value, dict):
        for key, child in value.items():
            found = _surrogate_in(key)
            if found is not None:
                return [*path, key.encode("utf-8", "backslashreplace").decode()], found
            inner = _lone_surrogate(child, [*path, key])
            if inner is not None:
                return inner
    elif isinstance(value, list):
        for index, child in enumerate(value):
            inner = _lone_surrogate(child, [*path, index])
            if inner is not None:
                return inner
    return None


def _surrogate_in(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return text[exc.start]
    return None


def validate(model: type[M], data: dict[str, Any]) -> M:
    """``model`` validated from ``data``; a 400 naming each bad field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # Metadata over the limits has its own code, which the SDK turns into its typed error.
        only_metadata = all(error["loc"][:1] == ("metadata",) for error in errors)
        code = INVALID_METADATA if only_metadata else None
        raise invalid(describe_validation_error(errors, data), error_code=code) from None


async def read_params(request: Request, model: type[M]) -> M:
    """Read the whole body (``corral.gateway.middleware`` caps its size) and validate it as ``model``."""
    return validate(model, parse_json_object(await request.body()))


def describe_validation_error(errors: Sequence[ErrorDetails], data: Any) -> str:
    entries: list[tuple[str, str, str, bool]] = []  # path, message, error type, sits on a union node
    deeper: set[str] = set()  # union nodes where some branch got past the value's shape
    for error in errors:
        path, branch_at = _client_path(error["loc"], error["type"], data)
        message = _FRIENDLY.get(error["type"], error["msg"])
        if error["type"] == "value_error":  # our own validators' words, without pydantic's prefix
            message = message.removeprefix("Value error, ")
        if error["type"] == "union_tag_not_found":  # the discriminator itself is missing
            path.append(str(error.get("ctx", {}).get("discriminator", "type")).strip("'"))
            message = "Field required"
        dotted = ".".join(str(p) for p in path)
        on_node = branch_at is not None and branch_at == len(path)
        if branch_at is not None and not on_node:
            deeper.add(".".join(str(p) for p in path[:branch_at]))
        entries.append((dotted, message, error["type"], on_node))

    lines: list[str] = []
    for dotted, message, kind, on_node in entries:
        if on_node and kind in _SHAPE_ERRORS and dotted in deeper:
            continue
        line = f"{dotted}: {message}" if dotted else message
        if line not in lines:
            lines.append(line)
    if len(lines) > MAX_REPORTED_ERRORS:
        hidden = len(lines) - MAX_REPORTED_ERRORS
        lines = [*lines[:MAX_REPORTED_ERRORS], f"(and {hidden} more)"]
    return "; ".join(lines) or "invalid request body"


def _client_path(loc: tuple[int | str, ...], kind: str, data: Any) -> tuple[list[int | str], int | None]:
    """The part of ``loc`` that names places in the client's JSON, and where a union branch was chosen.

    A location element that is not a key (or index) of the value reached so far is a union branch
    name, except for the last element of a ``missing`` error, which is the absent field itself.
    """
    path: list[int | str] = []
    branch_at: int | None = None
    node: Any = data
    for i, part in enumerate(loc):
        found, child = _child(node, part)
        if found:
            path.append(part)
            node = child
        elif i == len(loc) - 1 and kind == "missing":
            path.append(part)
        else:  # a branch name: it does not move through the client's value
            branch_at = len(path)
    return path, branch_at


def _child(node: Any, part: int | str) -> tuple[bool, Any]:
    if isinstance(node, dict) and isinstance(part, str) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None
