"""The built-in ``web_fetch`` and ``web_search`` tools: asked of the credential-proxy, not the sandbox.

The credential-proxy is the process that talks to the outside (``corral.contracts.web``): the harness
sends it the call's input and the tool's ``agent_toolset_20260401`` config (``allowed_domains``,
``blocked_domains``, ``max_content_tokens``; ``user_location`` for search) and records the answer as
the call's ``agent.tool_result``, as the API records server-side toolset tools:

- ``web_fetch``: one ``document`` block, its source the page's text (``{type: text, media_type:
  text/plain}``) or a PDF (``{type: base64, media_type: application/pdf}``), titled with the page's
  title, ``context`` naming the URL fetched and any truncation;
- ``web_search``: one ``search_result`` block per result (``source`` the URL, ``title``, the snippet
  as ``content``), or a text block when there is none.

A refusal (the tool's domains, the egress address rules, a port), a page that cannot be fetched,
no search backend configured: an error result whose text says what happened and what to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from corral.bus import Bus, BusError, NoResponders, UnreadableReply
from corral.contracts.api.errors import ApiError
from corral.contracts.api.events import HarnessEvent
from corral.contracts.operation import Operation
from corral.contracts.sandbox import TOOLSET_TYPE
from corral.contracts.web import FetchedPage, FetchPage, SearchResults, SearchWeb, UserLocation, WebOps
from corral.harness import events
from corral.harness.decide import INTERRUPTED, ToolCall
from corral.harness.interrupts import Stop, unless_interrupted

logger = logging.getLogger(__name__)

WEB_TOOLS: Final = frozenset({"web_fetch", "web_search"})
#: How long the harness waits for the credential-proxy's answer (it bounds a fetch itself, 30 s by default).
REPLY_TIMEOUT_S: Final = 90.0

_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


class WebToolError(Exception):
    """The call could not be answered; the message is for the model."""


class Web(Protocol):
    async def fetch(self, request: FetchPage) -> FetchedPage: ...

    async def search(self, request: SearchWeb) -> SearchResults: ...


class BusWeb:
    """``Web`` over the bus: the credential-proxy's ``WebOps``."""

    def __init__(self, bus: Bus, *, timeout_s: float = REPLY_TIMEOUT_S) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def fetch(self, request: FetchPage) -> FetchedPage:
        return await self._call(WebOps.FETCH, request)

    async def search(self, request: SearchWeb) -> SearchResults:
        return await self._call(WebOps.SEARCH, request)

    async def _call(self, op: Operation[_Req, _Rep], request: _Req) -> _Rep:
        tool = f"web_{op.name}"
        try:
            return await self._bus.call(op, request, timeout=self._timeout_s)
        except ApiError as exc:
            raise WebToolError(f"{tool} error ({exc.error_code or exc.error_type}): {exc.message}") from None
        except NoResponders:
            raise WebToolError(f"{tool} is unavailable: the credential-proxy, which runs it, is not running") from None
        except TimeoutError:
            raise WebToolError(f"{tool} got no answer within {self._timeout_s:g} s; try again later") from None
        except UnreadableReply as exc:
            raise WebToolError(f"{tool} got an unreadable answer ({exc.errors} validation errors)") from None
        except BusError as exc:
            raise WebToolError(f"{tool} could not reach the credential-proxy ({type(exc).__name__})") from None


def tool_config(agent: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The resolved ``configs[]`` entry of built-in tool ``name`` in the agent's toolset (``{}``: none)."""
    for tool in agent.get("tools") or ():
        if isinstance(tool, Mapping) and tool.get("type") == TOOLSET_TYPE:
            for config in tool.get("configs") or ():
                if isinstance(config, Mapping) and config.get("name") == name:
                    return config
    return {}


def _domains(config: Mapping[str, Any], key: str) -> list[str] | None:
    value = config.get(key)
    return [str(v) for v in value] if isinstance(value, list) and value else None


def fetch_request(session_id: str, call: ToolCall, config: Mapping[str, Any]) -> FetchPage:
    """Raises: WebToolError: the input has no URL."""
    url = call.input.get("url")
    if not isinstance(url, str) or not url.strip():
        raise WebToolError('web_fetch needs {"url": "<an http or https URL>"}')
    tokens = config.get("max_content_tokens")
    return FetchPage(
        session_id=session_id,
        url=url.strip(),
        allowed_domains=_domains(config, "allowed_domains"),
        blocked_domains=_domains(config, "blocked_domains"),
        max_content_tokens=tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0 else None,
    )


def search_request(session_id: str, call: ToolCall, config: Mapping[str, Any]) -> SearchWeb:
    """Raises: WebToolError: the input has no query."""
    query = call.input.get("query")
    if not isinstance(query, str) or not query.strip():
        raise WebToolError('web_search needs {"query": "<what to search for>"}')
    location = config.get("user_location")
    try:
        where = UserLocation.model_validate(location) if isinstance(location, Mapping) else None
    except ValidationError:
        where = None
    return SearchWeb(
        session_id=session_id,
        query=query.strip()[:1000],
        allowed_domains=_domains(config, "allowed_domains"),
        blocked_domains=_domains(config, "blocked_domains"),
        user_location=where,
    )


def fetch_content(page: FetchedPage) -> list[dict[str, Any]]:
    """The ``agent.tool_result`` content of a fetched page: one ``document`` block."""
    context = " ".join([f"Fetched from {page.url} ({page.content_type}).", *page.notes])
    if page.pdf_base64 is not None:
        source: dict[str, Any] = {"type": "base64", "media_type": "application/pdf", "data": page.pdf_base64}
    else:
        source = {"type": "text", "media_type": "text/plain", "data": page.text or "(the page has no text)"}
    return [{"type": "document", "source": source, "title": page.title or page.url, "context": context}]


def search_content(results: SearchResults) -> list[dict[str, Any]]:
    """The ``agent.tool_result`` content of a search: one ``search_result`` block per result."""
    if not results.results:
        return [{"type": "text", "text": f"No results for {results.query!r}."}]
    return [
        {
            "type": "search_result",
            "source": hit.url,
            "title": hit.title,
            "content": [{"type": "text", "text": hit.snippet or hit.title}],
            "citations": {"enabled": True},
        }
        for hit in results.results
    ]


async def run_web_tool(
    web: Web, session_id: str, agent: Mapping[str, Any], call: ToolCall, interrupted: asyncio.Event
) -> HarnessEvent:
    """The ``agent.tool_result`` of a ``web_fetch`` or ``web_search`` call."""
    config = tool_config(agent, call.name)
    fields = {"fields": {"session_id": session_id, "tool_use_id": call.id, "tool": call.name}}
    try:
        if call.name == "web_fetch":
            outcome: Any = await unless_interrupted(web.fetch(fetch_request(session_id, call, config)), interrupted)
            content = None if outcome is Stop.INTERRUPTED else fetch_content(outcome)
        else:
            outcome = await unless_interrupted(web.search(search_request(session_id, call, config)), interrupted)
            content = None if outcome is Stop.INTERRUPTED else search_content(outcome)
    except WebToolError as exc:
        logger.info("web tool refused or failed: %s", exc, extra=fields)
        return events.tool_error(call.id, str(exc))
    if content is None:
        return events.tool_error(call.id, INTERRUPTED)
    logger.info("web tool answered", extra=fields)
    return events.tool_result(call.id, content, is_error=False)
