"""The Messages API over HTTP, as the harness asks it: a ``POST`` answered with JSON, or a streamed
``POST /v1/messages`` read as its server-sent events; every failure raised as a ``ModelError``.

A client of its own over ``httpx2`` rather than the ``anthropic`` SDK, which builds a typed object
for every event of a reply: the SDK was 37 % of a busy harness's CPU per quick turn, and about 46 MB
of its memory and 1 to 4 s of its start. The harness needs little of it: pre-encoded request bodies
(``corral.harness.requestbody``), the text and ``tool_use`` blocks of a reply
(``corral.harness.replyfold``), the errors mapped to ``session.error`` types (``status_error``). It
never retries (the turn driver does, visibly), and sends the headers the SDK sends the API (the key
as a bearer token, ``anthropic-version``), a JSON body; timeouts and proxies as the SDK's defaults.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

import httpx2

from corral.harness.model import ModelError

#: The API version the request and reply shapes are those of (the SDK's ``ANTHROPIC_API_VERSION``).
API_VERSION: Final = "2026-10-21"
#: Where requests go without a base URL (``CORRAL_MODEL_BASE_URL``): the Anthropic API.
DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
#: A reply may take minutes; connecting may not (the SDK's defaults).
TIMEOUT: Final = httpx2.Timeout(600.0, connect=5.0)

_MESSAGE_LIMIT = 300
_TERMINAL_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 413, 422})
_TERMINAL_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error", "not_found_error"})

Event = dict[str, Any]


def clip(text: str, secrets: Sequence[str]) -> str:
    """``text`` on one line, without any of ``secrets``, at most ``_MESSAGE_LIMIT`` characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def status_error(status: int, body_type: str, api_message: str, *, secrets: Sequence[str] = ()) -> ModelError:
    """The ``session.error`` an answer of ``status`` (200 for an ``error`` event mid-reply) with an
    error body of ``body_type`` becomes.

    429 (or ``rate_limit_error``) → ``model_rate_limited_error``; 529 (or ``overloaded_error``) →
    ``model_overloaded_error``; 402 → ``billing_error``; anything else →
    ``model_request_failed_error``. Client errors asking again cannot fix (400, 401, 403, 404, ...)
    are not retryable; 408, 409, 429 and 5xx are.
    """
    detail = f": {api_message}" if api_message else ""
    described = clip(f"The model API answered {status} {body_type}{detail}".replace("  ", " "), secrets)
    if status == 429 or body_type == "rate_limit_error":
        return ModelError("model_rate_limited_error", described, retryable=True, status=status)
    if status == 529 or body_type == "overloaded_error":
        return ModelError("model_overloaded_error", described, retryable=True, status=status)
    if status == 402 or body_type == "billing_error":
        return ModelError("billing_error", described, retryable=False, status=status)
    retryable = status not in _TERMINAL_STATUSES and body_type not in _TERMINAL_TYPES
    return ModelError("model_request_failed_error", described, retryable=retryable, status=status)


def timed_out() -> ModelError:
    return ModelError("model_request_failed_error", "The model API did not answer in time.", retryable=True)


def unreachable() -> ModelError:
    return ModelError("model_request_failed_error", "Could not connect to the model API.", retryable=True)


def cut_off(exc: Exception) -> ModelError:
    return ModelError(
        "model_request_failed_error",
        f"The connection to the model API broke during its reply ({type(exc).__name__}).",
        retryable=True,
    )


@contextlib.contextmanager
def _unanswered_raised() -> Iterator[None]:
    """A request that got no answer raised as the ``ModelError`` it becomes (timed out, or not sent)."""
    try:
        yield
    except httpx2.TimeoutException:
        raise timed_out() from None
    except httpx2.TransportError:
        raise unreachable() from None


def _error_of(body: Any) -> tuple[str, str]:
    """An error body's ``error.type`` and ``error.message`` (empty when it has none)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("type") or ""), str(error.get("message") or "")


class MessagesClient:
    """Requests to one Messages API endpoint with one key, over a pool of keep-alive connections.

    ``secrets`` never appear in an error's message: the key, and anything else the caller names.
    ``transport`` replaces the network (unit tests)."""

    def __init__(
        self,
        *,
        base_url: str | None,
        api_key: str,
        transport: httpx2.AsyncBaseTransport | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.secrets = (api_key, *secrets)
        self._http = httpx2.AsyncClient(
            base_url=base_url or DEFAULT_BASE_URL,
            headers={
                "authorization": f"Bearer {api_key}",
                "anthropic-version": API_VERSION,
                "accept": "application/json",
                "content-type": "application/json",
                "user-agent": "corral-harness",
            },
            timeout=TIMEOUT,
            transport=transport,
        )

    @property
    def base_url(self) -> httpx2.URL:
        return self._http.base_url

    async def close(self) -> None:
        await self._http.aclose()

    async def post(self, path: str, body: bytes) -> Any:
        """The JSON answer of ``POST path`` with ``body``; raises ``ModelError``."""
        with _unanswered_raised():
            response = await self._http.post(path, content=body)
        if not response.is_success:
            raise self._refused(response.status_code, response.content)
        try:
            return response.json()
        except ValueError:
            raise ModelError(
                "model_request_failed_error", "The model API answered with a body that is not JSON.", retryable=True
            ) from None

    @contextlib.asynccontextmanager
    async def events(self, path: str, body: bytes) -> AsyncIterator[AsyncIterator[Event]]:
        """The events of the streamed ``POST path`` with ``body``, each the JSON of one ``data``
        field; an ``error`` event, or a connection broken mid-reply, raises ``ModelError``."""
        request = self._http.build_request("POST", path, content=body)
        with _unanswered_raised():
            response = await self._http.send(request, stream=True)
        try:
            if not response.is_success:
                raise self._refused(response.status_code, await response.aread())
            yield self._read(response)
        finally:
            await response.aclose()

    def _refused(self, status: int, content: bytes) -> ModelError:
        try:
            body_type, api_message = _error_of(json.loads(content))
        except ValueError:
            body_type, api_message = "", content.decode("utf-8", "replace")
        return status_error(status, body_type, api_message, secrets=self.secrets)

    async def _read(self, response: httpx2.Response) -> AsyncIterator[Event]:
        """Server-sent events: ``data`` lines joined, dispatched at a blank line; comments (``:``) and
        other fields skipped. An event whose ``data`` is not a JSON object is skipped too."""
        data: list[str] = []
        try:
            async for line in response.aiter_lines():
                if line:
                    if line.startswith("data:"):
                        data.append(line[6:] if line.startswith("data: ") else line[5:])
                    continue
                if not data:
                    continue
                try:
                    event = json.loads("\n".join(data))
                except ValueError:
                    event = None
                data.clear()
                if not isinstance(event, dict):
                    continue
                if event.get("type") == "error":
                    raise status_error(200, *_error_of(event), secrets=self.secrets)
                yield event
        except httpx2.TransportError as exc:  # a reply cut off, or silent past the read timeout
            raise cut_off(exc) from None
