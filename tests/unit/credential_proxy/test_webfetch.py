"""web_fetch and web_search in the credential-proxy, against real HTTP servers on loopback: the
egress address rules apply to every hop, the operator's allow-list admits one address."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from corral.contracts.api.errors import ApiError
from corral.contracts.web import FetchPage, SearchWeb, WebError
from corral.credential_proxy.settings import EgressSettings, WebSettings
from corral.credential_proxy.webfetch import WebFetcher
from corral.credential_proxy.websearch import WebSearch
from tests.web_site import Site, serving_site

ADMITTED = "127.0.0.7"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serving_site(ADMITTED) as served:
        yield served


@pytest.fixture(scope="module")
def forbidden() -> Iterator[Site]:
    with serving_site("127.0.0.1") as served:
        yield served


def fetcher(site: Site, forbidden: Site, **web: object) -> WebFetcher:
    egress = EgressSettings(
        ports=(80, 443, site.port, forbidden.port), allow_addresses=(ipaddress.ip_network(f"{ADMITTED}/32"),)
    )
    return WebFetcher(WebSettings(**web), egress, own_addresses=lambda: {ipaddress.ip_address("127.0.0.1")})


def request(url: str, **config: object) -> FetchPage:
    return FetchPage(session_id="sesn_test", url=url, **config)  # type: ignore[arg-type]


async def refused(fetch: WebFetcher, page: FetchPage) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await fetch.fetch(page)
    return caught.value


async def test_an_admitted_page_comes_back_as_text(site: Site, forbidden: Site) -> None:
    page = await fetcher(site, forbidden).fetch(request(site.url("/page.html")))
    assert page.title == "Canary page" and page.status == 200 and page.content_type == "text/html"
    assert page.text is not None and site.canary in page.text and "hidden" not in page.text
    assert f"({site.url('/other.html')})" in page.text
    assert page.notes == []


async def test_a_loopback_address_not_admitted_is_refused_before_connecting(site: Site, forbidden: Site) -> None:
    before = len(forbidden.requests)
    error = await refused(fetcher(site, forbidden), request(forbidden.url("/page.html")))
    assert error.error_code == WebError.URL_NOT_ALLOWED
    assert "loopback" in error.message and "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in error.message
    assert len(forbidden.requests) == before


async def test_a_redirect_to_a_forbidden_address_is_refused(site: Site, forbidden: Site) -> None:
    before = len(forbidden.requests)
    target = forbidden.url("/page.html")
    error = await refused(fetcher(site, forbidden), request(site.url(f"/redirect?to={target}")))
    assert error.error_code == WebError.URL_NOT_ALLOWED and "loopback" in error.message
    assert len(forbidden.requests) == before


async def test_a_redirect_within_the_rules_is_followed(site: Site, forbidden: Site) -> None:
    page = await fetcher(site, forbidden).fetch(request(site.url("/redirect?to=/page.html")))
    assert page.url == site.url("/page.html") and site.canary in (page.text or "")


async def test_too_many_redirects(site: Site, forbidden: Site) -> None:
    error = await refused(
        fetcher(site, forbidden, web_fetch_max_redirects=0), request(site.url("/redirect?to=/page.html"))
    )
    assert error.error_code == WebError.URL_NOT_ACCESSIBLE and "redirected more than 0 times" in error.message


async def test_domains_and_ports_are_checked(site: Site, forbidden: Site) -> None:
    fetch = fetcher(site, forbidden)
    blocked = await refused(fetch, request(site.url("/page.html"), blocked_domains=[ADMITTED]))
    assert blocked.error_code == WebError.URL_NOT_ALLOWED and "blocked_domains" in blocked.message
    other = await refused(fetch, request(site.url("/page.html"), allowed_domains=["example.com"]))
    assert "allowed_domains" in other.message
    port = await refused(fetch, request(f"http://{ADMITTED}:9/"))
    assert port.error_code == WebError.URL_NOT_ALLOWED and "port 9" in port.message
    scheme = await refused(fetch, request("file:///etc/passwd"))
    assert scheme.error_code == WebError.INVALID_INPUT


async def test_max_content_tokens_and_the_size_bound(site: Site, forbidden: Site) -> None:
    page = await fetcher(site, forbidden).fetch(request(site.url("/long.html"), max_content_tokens=100))
    assert page.text is not None and len(page.text) <= 400 and page.text.startswith("Paragraph 0")
    assert any("max_content_tokens (100 tokens)" in note for note in page.notes)
    small = await fetcher(site, forbidden, web_fetch_max_bytes=2048).fetch(request(site.url("/long.html")))
    assert any("first 2048 bytes" in note for note in small.notes)


async def test_an_http_error_is_reported(site: Site, forbidden: Site) -> None:
    error = await refused(fetcher(site, forbidden), request(site.url("/missing")))
    assert error.error_code == WebError.URL_NOT_ACCESSIBLE and "HTTP 404" in error.message


async def test_search_without_a_backend_says_it_is_not_configured() -> None:
    with pytest.raises(ApiError) as caught:
        await WebSearch.from_settings(WebSettings()).search(SearchWeb(session_id="s", query="otters"))
    assert caught.value.error_code == WebError.NOT_CONFIGURED
    assert "CORRAL_CREDENTIAL_PROXY_SEARCH_URL" in caught.value.message


async def test_search_asks_searxng_and_applies_the_domains(site: Site) -> None:
    search = WebSearch.from_settings(WebSettings(search_url=site.url("")))
    found = await search.search(SearchWeb(session_id="s", query="otters", blocked_domains=["example.net"]))
    assert [hit.url for hit in found.results] == ["https://docs.example.com/otters", "https://example.org/otters"]
    assert found.results[1].title == "Otter news" and found.results[1].page_age == "2026-01-02"
    assert any("q=otters" in path for path in site.requests)
