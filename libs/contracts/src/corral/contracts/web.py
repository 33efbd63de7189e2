"""Web tool operations: the built-in ``web_fetch`` and ``web_search`` tools, run by the credential-proxy.

The harness asks the credential-proxy (the process that talks to the outside) on
``corral.rpc.web.<op>`` (queue group ``credential-proxy``), with the tool's input and its
``agent_toolset_20260401`` config:

- ``fetch`` (``FetchPage`` -> ``FetchedPage``): one ``GET`` of an ``http``/``https`` URL under the same
  destination rules as a sandbox's egress (the address it connects to is never loopback, private,
  link-local, documentation or one of the machine's own unless the operator's
  ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES`` holds it, on the ports
  ``CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS`` allows), and the
  tool's ``allowed_domains`` / ``blocked_domains``; each redirect hop is checked again. HTML comes back
  as text (Markdown), truncated to ``max_content_tokens``; a PDF comes back whole (base64) up to the
  size bound.
- ``search`` (``SearchWeb`` -> ``SearchResults``): a query to the search backend the operator
  configured (``CORRAL_CREDENTIAL_PROXY_SEARCH_URL``, a SearXNG instance), results filtered by the
  tool's domains.

A failure the model should be told about is an ``RpcReply`` error of type ``invalid_request_error``
whose ``details.error_code`` is one of ``WebError`` (the Messages API's web tool error codes, plus
``not_configured``) and whose message says what happened and what to do.
"""

from __future__ import annotations

from typing import Final, TypeVar

from pydantic import BaseModel, Field

from corral.contracts.operation import Operation, operation
from corral.contracts.rpc import Message
from corral.contracts.subjects import WEB_QUEUE as WEB_QUEUE
from corral.contracts.subjects import WEB_RPC_WILDCARD as WEB_RPC_WILDCARD
from corral.contracts.subjects import web_rpc as web_rpc

#: Longest URL ``web_fetch`` takes (longer: ``url_too_long``).
MAX_URL_LENGTH: Final = 2048
#: Longest ``web_search`` query.
MAX_QUERY_LENGTH: Final = 1000
#: Most entries in ``allowed_domains`` / ``blocked_domains`` (the API's limit).
MAX_DOMAINS: Final = 64
_SESSION_ID: Final = r"^[A-Za-z0-9_-]{1,128}$"


class WebOp:
    """Operation names; each is the last token of its request subject."""

    FETCH = "fetch"
    SEARCH = "search"


class WebError:
    """``details.error_code`` of a web tool's error reply."""

    INVALID_INPUT = "invalid_tool_input"
    URL_TOO_LONG = "url_too_long"
    URL_NOT_ALLOWED = "url_not_allowed"
    """The tool's domains, the egress ports or the address rules refuse the URL (or a redirect hop)."""
    URL_NOT_ACCESSIBLE = "url_not_accessible"
    """It does not resolve, does not answer, answers an HTTP error or too many redirects."""
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    UNAVAILABLE = "unavailable"
    """The search backend failed."""
    NOT_CONFIGURED = "not_configured"
    """No search backend is configured in this deployment."""


class FetchPage(Message):
    """Fetch one URL for a session's ``web_fetch`` call."""

    session_id: str = Field(pattern=_SESSION_ID, description="the session the call belongs to (for the logs)")
    url: str = Field(min_length=1, description="the URL the model asked for (http or https)")
    allowed_domains: list[str] | None = Field(
        default=None, max_length=MAX_DOMAINS, description="only these hosts or their subdomains (the tool's config)"
    )
    blocked_domains: list[str] | None = Field(
        default=None, max_length=MAX_DOMAINS, description="never these hosts or their subdomains (the tool's config)"
    )
    max_content_tokens: int | None = Field(
        default=None, ge=1, description="most tokens of text returned (about 4 characters each); none: no limit"
    )


class FetchedPage(Message):
    """What a fetch gave: the text (``text``), or a PDF (``pdf_base64``)."""

    url: str = Field(description="the URL finally fetched (after redirects)")
    status: int = Field(description="its HTTP status")
    content_type: str = Field(description="its media type, without parameters")
    title: str | None = Field(default=None, description="the HTML page's title")
    text: str | None = Field(default=None, description="the content as text (HTML turned into Markdown)")
    pdf_base64: str | None = Field(default=None, description="a PDF's bytes, base64")
    notes: list[str] = Field(
        default_factory=list, description="what was left out: truncation to max_content_tokens or the size bound"
    )


class UserLocation(Message):
    type: str = "approximate"
    city: str | None = None
    region: str | None = None
    country: str | None = None
    timezone: str | None = None


class SearchWeb(Message):
    """Search the web for a session's ``web_search`` call."""

    session_id: str = Field(pattern=_SESSION_ID, description="the session the call belongs to (for the logs)")
    query: str = Field(min_length=1, max_length=MAX_QUERY_LENGTH, description="the model's query")
    allowed_domains: list[str] | None = Field(default=None, max_length=MAX_DOMAINS)
    blocked_domains: list[str] | None = Field(default=None, max_length=MAX_DOMAINS)
    user_location: UserLocation | None = Field(default=None, description="approximate location (the tool's config)")


class SearchHit(Message):
    url: str
    title: str
    snippet: str = ""
    page_age: str | None = None


class SearchResults(Message):
    query: str
    results: list[SearchHit]


_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _web(name: str, request: type[_Req], reply: type[_Rep]) -> Operation[_Req, _Rep]:
    return operation(name, web_rpc(name), request, reply, queue=WEB_QUEUE, service="credential-proxy")


class WebOps:
    """Every ``corral.rpc.web.<op>`` operation (queue group ``credential-proxy``)."""

    FETCH: Final = _web(WebOp.FETCH, FetchPage, FetchedPage)
    SEARCH: Final = _web(WebOp.SEARCH, SearchWeb, SearchResults)
