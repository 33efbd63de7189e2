"""Successful responses: the session-store's result as JSON, and list pages in the SDK's cursor shape."""

from __future__ import annotations

from typing import Any

import pydantic_core
from starlette.responses import JSONResponse

from corral.contracts.rpc import Deleted, Page


class ApiJSONResponse(JSONResponse):
    """JSON encoded by pydantic-core rather than the standard library's ``json``: the same compact,
    UTF-8 JSON (floats may be spelled differently, ``1e-05`` as ``0.00001``), at a fraction of the
    CPU on a session-sized body. A NaN or infinity, which JSON cannot hold, is written ``null``."""

    def render(self, content: Any) -> bytes:
        return pydantic_core.to_json(content, inf_nan_mode="null")


def ok(result: Any) -> JSONResponse:
    return ApiJSONResponse(result)


def page(result: Page, *, bidirectional: bool = False) -> JSONResponse:
    """``{"data": [...], "next_page": ...}`` (plus ``prev_page`` for ``GET /v1/sessions``)."""
    body: dict[str, Any] = {"data": result.data, "next_page": result.next_page}
    if bidirectional:
        body["prev_page"] = result.prev_page
    return ApiJSONResponse(body)


def deleted(result: Deleted) -> JSONResponse:
    """``{"id": ..., "type": "<kind>_deleted"}`` with 200."""
    return ApiJSONResponse(result.model_dump(mode="json"))
