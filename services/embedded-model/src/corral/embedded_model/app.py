"""HTTP routes: the Messages API, health, and the ``/_corral`` control endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from pydantic import JsonValue, TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.embedded_model import wire
from corral.embedded_model.recording import RequestLog
from corral.embedded_model.reply import Reply, estimate_input_tokens, plan_reply, prompt_too_long
from corral.embedded_model.request import MessagesRequest
from corral.embedded_model.script import (
    ERROR_TYPE_BY_STATUS,
    ErrorSpec,
    ScenarioBook,
    ScriptError,
    describe_validation_error,
    parse_script,
)

logger = logging.getLogger(__name__)

_JSON = TypeAdapter[JsonValue](JsonValue)


class EmbeddedModel:
    """The server's state (scenarios and recorded requests) and its request handlers."""

    def __init__(self, book: ScenarioBook, requests: RequestLog, *, max_input_tokens: int | None = None) -> None:
        self.book = book
        self.requests = requests
        self.max_input_tokens = max_input_tokens

    async def messages(self, request: Request) -> Response:
        received_at = time.time()
        request_id = wire.new_id("req")
        raw = await request.body()
        try:
            parsed = MessagesRequest.model_validate_json(raw)
        except ValidationError as exc:
            message = describe_validation_error(exc)
            logger.info("rejected Messages request %s: %s", request_id, message)
            return error_response(400, "invalid_request_error", message, request_id=request_id)

        too_long = prompt_too_long(parsed, self.max_input_tokens)
        if too_long is not None:
            self.requests.record(
                request_id=request_id,
                scenario=None,
                turn_index=parsed.turn_index,
                stream=parsed.stream,
                errored=True,
                body=_JSON.validate_json(raw),
                received_at=received_at,
            )
            logger.info("refused Messages request %s: %s", request_id, too_long)
            return error_response(400, "invalid_request_error", too_long, request_id=request_id)
        reply = plan_reply(parsed, self.book)
        self.requests.record(
            request_id=request_id,
            scenario=reply.scenario,
            turn_index=reply.turn_index,
            stream=parsed.stream,
            errored=reply.error is not None,
            body=_JSON.validate_json(raw),
            received_at=received_at,
        )
        logger.info(
            "Messages request %s: scenario=%s turn=%d stream=%s%s",
            request_id,
            reply.scenario or "(default)",
            reply.turn_index,
            parsed.stream,
            f" error={reply.error.status}" if reply.error else "",
        )
        delay_s = reply.first_byte_delay_ms / 1000
        if delay_s and not await _wait_unless_disconnected(request, delay_s):
            logger.info("caller of %s hung up during first_byte_delay_ms", request_id)
            return Response(status_code=499)
        if reply.error is not None:
            return scripted_error_response(reply.error, request_id=request_id)
        return self._answer(reply, parsed, request_id)

    def _answer(self, reply: Reply, parsed: MessagesRequest, request_id: str) -> Response:
        message_id = wire.new_id("msg")
        if parsed.stream:
            return StreamingResponse(
                wire.stream(reply, model=parsed.model, message_id=message_id),
                media_type="text/event-stream",
                headers={"request-id": request_id, "cache-control": "no-cache"},
            )
        return JSONResponse(
            wire.message(reply, model=parsed.model, message_id=message_id),
            headers={"request-id": request_id},
        )

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``: the same estimate the usage and the size limit use."""
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            parsed = MessagesRequest.model_validate({"max_tokens": 1, **body})
        except ValidationError as exc:
            return error_response(400, "invalid_request_error", describe_validation_error(exc))
        except ValueError as exc:
            return error_response(400, "invalid_request_error", f"invalid JSON body: {exc}")
        return JSONResponse({"input_tokens": estimate_input_tokens(parsed)})

    async def get_limits(self, _request: Request) -> Response:
        return JSONResponse({"max_input_tokens": self.max_input_tokens})

    async def set_limits(self, request: Request) -> Response:
        """``PUT /_corral/limits {"max_input_tokens": n | null}``: refuse larger requests from now on."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        value = body.get("max_input_tokens", "missing") if isinstance(body, dict) else "missing"
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            return error_response(
                400, "invalid_request_error", "max_input_tokens: a positive integer, or null for no limit"
            )
        self.max_input_tokens = value
        logger.info("max_input_tokens set to %s", value)
        return JSONResponse({"max_input_tokens": value})

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_scripts(self, _request: Request) -> Response:
        return JSONResponse({"scenarios": self.book.names})

    async def install_scripts(self, request: Request) -> Response:
        try:
            document = parse_script(await request.body())
        except ScriptError as exc:
            return error_response(400, "invalid_request_error", str(exc))
        installed = self.book.install(document)
        logger.info("installed scenarios %s", installed)
        return JSONResponse({"installed": installed, "scenarios": self.book.names})

    async def clear_scripts(self, request: Request) -> Response:
        removed = self.book.clear(request.query_params.get("name"))
        logger.info("removed runtime scenarios %s", removed)
        return JSONResponse({"removed": removed, "scenarios": self.book.names})

    async def list_requests(self, request: Request) -> Response:
        entries = self.requests.entries(request.query_params.get("scenario"))
        return JSONResponse({"requests": [entry.to_json() for entry in entries]})

    async def clear_requests(self, _request: Request) -> Response:
        return JSONResponse({"cleared": self.requests.clear()})


async def _wait_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep, but stop early if the caller disconnects; True if the full wait elapsed."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.create_task(disconnected())
    done, _ = await asyncio.wait({watcher}, timeout=seconds)
    watcher.cancel()
    return not done


def error_response(
    status: int,
    error_type: str,
    message: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    all_headers = {"request-id": request_id or wire.new_id("req"), **(headers or {})}
    return JSONResponse(wire.error_body(error_type, message), status_code=status, headers=all_headers)


def scripted_error_response(error: ErrorSpec, *, request_id: str) -> JSONResponse:
    headers: dict[str, str] = {}
    if error.retry_after_ms is not None:
        headers["retry-after-ms"] = str(error.retry_after_ms)
        headers["retry-after"] = str(math.ceil(error.retry_after_ms / 1000))
    return error_response(
        error.status,
        error.error_type,
        error.message,
        request_id=request_id,
        headers=headers,
    )


async def _http_error(_request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "Internal server error."
    error_type = ERROR_TYPE_BY_STATUS.get(status, "invalid_request_error")
    return error_response(status, error_type, detail)


def create_app(book: ScenarioBook, requests: RequestLog, *, max_input_tokens: int | None = None) -> Starlette:
    model = EmbeddedModel(book, requests, max_input_tokens=max_input_tokens)
    routes = [
        Route("/v1/messages", model.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", model.count_tokens, methods=["POST"]),
        Route("/_corral/limits", model.get_limits, methods=["GET"]),
        Route("/_corral/limits", model.set_limits, methods=["PUT"]),
        Route("/health", model.health, methods=["GET"]),
        Route("/_corral/scripts", model.list_scripts, methods=["GET"]),
        Route("/_corral/scripts", model.install_scripts, methods=["POST"]),
        Route("/_corral/scripts", model.clear_scripts, methods=["DELETE"]),
        Route("/_corral/requests", model.list_requests, methods=["GET"]),
        Route("/_corral/requests", model.clear_requests, methods=["DELETE"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _http_error},
    )
