"""``web_search``: the operator's search backend behind one small interface.

``SearchBackend`` is what a backend implements; ``SearxngBackend`` asks a SearXNG instance's JSON API
(``GET <CORRAL_CREDENTIAL_PROXY_SEARCH_URL>/search?q=...&format=json``; SearXNG must list ``json`` in
``search.formats``). The backend is the operator's own service, so it is reached directly, not under
the egress destination rules (it commonly runs on this machine or a private network). With no backend
configured, every search is answered ``not_configured`` with a message saying so.

Results are filtered by the tool's ``allowed_domains`` / ``blocked_domains`` and capped at
``search_max_results``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx2

from corral.contracts.web import SearchHit, SearchResults, SearchWeb, UserLocation, WebError
from corral.credential_proxy.settings import WebSettings
from corral.credential_proxy.webdomains import url_allowed
from corral.credential_proxy.webfetch import web_error

logger = logging.getLogger(__name__)

NOT_CONFIGURED = (
    "web_search is not configured in this deployment: no search backend is set, so nothing was searched. "
    "An operator enables it by pointing CORRAL_CREDENTIAL_PROXY_SEARCH_URL at a SearXNG instance; meanwhile, "
    "use web_fetch on a URL you know, or ask the user"
)


class SearchBackend(Protocol):
    name: str

    async def search(self, query: str, *, limit: int, location: UserLocation | None) -> list[SearchHit]:
        """Raises: ApiError: ``unavailable`` when the backend fails."""
        ...


class SearxngBackend:
    """A SearXNG instance's JSON API."""

    name = "searxng"

    def __init__(self, base_url: str, *, timeout_s: float) -> None:
        self._url = base_url.rstrip("/") + "/search"
        self._timeout_s = timeout_s

    async def search(self, query: str, *, limit: int, location: UserLocation | None) -> list[SearchHit]:
        params = {"q": query, "format": "json"}
        if location is not None and location.country:
            params["language"] = f"all-{location.country.upper()}"
        try:
            async with httpx2.AsyncClient(timeout=self._timeout_s, follow_redirects=False) as client:
                answer = await client.get(self._url, params=params, headers={"Accept": "application/json"})
        except httpx2.HTTPError as exc:
            raise web_error(
                WebError.UNAVAILABLE, f"the search backend could not be reached ({type(exc).__name__})"
            ) from None
        if answer.status_code != 200:
            hint = " (is json in SearXNG's search.formats?)" if answer.status_code == 403 else ""
            raise web_error(WebError.UNAVAILABLE, f"the search backend answered HTTP {answer.status_code}{hint}")
        try:
            document: Any = answer.json()
        except ValueError:
            raise web_error(WebError.UNAVAILABLE, "the search backend answered something that is not JSON") from None
        results = document.get("results") if isinstance(document, dict) else None
        if not isinstance(results, list):
            raise web_error(WebError.UNAVAILABLE, "the search backend's answer has no results list")
        hits: list[SearchHit] = []
        for entry in results:
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                continue
            url = entry["url"]
            if not url.startswith(("http://", "https://")):
                continue
            title = entry.get("title")
            title = title if isinstance(title, str) and title.strip() else url
            snippet = entry.get("content")
            snippet = snippet if isinstance(snippet, str) else ""
            published = entry.get("publishedDate")
            hits.append(
                SearchHit(
                    url=url,
                    title=title.strip(),
                    snippet=snippet.strip(),
                    page_age=published if isinstance(published, str) and published else None,
                )
            )
        return hits[: limit * 3]  # room for the tool's domains to filter some out


class WebSearch:
    def __init__(self, backend: SearchBackend | None, *, max_results: int) -> None:
        self._backend = backend
        self._max_results = max_results

    @classmethod
    def from_settings(cls, settings: WebSettings) -> WebSearch:
        backend = (
            SearxngBackend(settings.search_url, timeout_s=settings.search_timeout_s) if settings.search_url else None
        )
        return cls(backend, max_results=settings.search_max_results)

    @property
    def configured(self) -> bool:
        return self._backend is not None

    async def search(self, request: SearchWeb) -> SearchResults:
        """Raises: ApiError: ``not_configured`` without a backend, ``unavailable`` when it fails."""
        if self._backend is None:
            raise web_error(WebError.NOT_CONFIGURED, NOT_CONFIGURED)
        hits = await self._backend.search(request.query, limit=self._max_results, location=request.user_location)
        kept = [h for h in hits if url_allowed(h.url, request.allowed_domains, request.blocked_domains)]
        logger.info(
            "web_search answered",
            extra={"fields": {"session_id": request.session_id, "results": len(hits), "kept": len(kept)}},
        )
        return SearchResults(query=request.query, results=kept[: self._max_results])
