"""Successful responses: the session-store's result as JSON, and list pages in the SDK's cursor shape."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from corral.contracts.api.errors import ApiError
from corral.contracts.rpc import Deleted, Page


def ok(result: Any) -> JSONResponse:
    return JSONResponse(result)


def page(result: Any, *, bidirectional: bool = False) -> JSONResponse:
    """``{"data": [...], "next_page": ...}`` (plus ``prev_page`` for ``GET /v1/sessions``)."""
    try:
        parsed = Page.model_validate(result)
    except ValidationError as exc:
        raise ApiError("api_error", "the session-store returned a malformed page") from exc
    body: dict[str, Any] = {"data": parsed.data, "next_page": parsed.next_page}
    if bidirectional:
        body["prev_page"] = parsed.prev_page
    return JSONResponse(body)


def deleted(result: Any) -> JSONResponse:
    """``{"id": ..., "type": "<kind>_deleted"}`` with 200."""
    try:
        parsed = Deleted.model_validate(result)
    except ValidationError as exc:
        raise ApiError("api_error", "the session-store returned a malformed deletion") from exc
    return JSONResponse(parsed.model_dump(mode="json"))
