"""Successful responses: the session-store's result as JSON, and list pages in the SDK's cursor shape."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from corral.contracts.rpc import Deleted, Page


def ok(result: Any) -> JSONResponse:
    return JSONResponse(result)


def page(result: Page, *, bidirectional: bool = False) -> JSONResponse:
    """``{"data": [...], "next_page": ...}`` (plus ``prev_page`` for ``GET /v1/sessions``)."""
    body: dict[str, Any] = {"data": result.data, "next_page": result.next_page}
    if bidirectional:
        body["prev_page"] = result.prev_page
    return JSONResponse(body)


def deleted(result: Deleted) -> JSONResponse:
    """``{"id": ..., "type": "<kind>_deleted"}`` with 200."""
    return JSONResponse(result.model_dump(mode="json"))
