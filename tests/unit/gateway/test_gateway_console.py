"""``/console``: the console's files, served without a key and with a strict CSP; its config.json
names Jaeger when the gateway is told where it is, and carries the list price table."""

from __future__ import annotations

import re

from gateway_fakes import FakeStore, client_for

from corral.contracts.prices import LIST_PRICES
from corral.gateway.routes.console import ASSETS


async def test_the_page_and_every_module_it_imports_are_served_without_a_key() -> None:
    async with client_for(FakeStore(), api_key=None) as client:
        page = await client.get("/console/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "connect-src 'self'" in csp and "script-src 'self'" in csp and "default-src 'none'" in csp
        # every file the page and its modules name is there, with a type a browser runs
        named = set(re.findall(r'(?:href|src)="/console/([^"]+)"', page.text))
        for name, body in ASSETS.items():
            if name.endswith(".js"):
                folder = name.rsplit("/", 1)[0]
                for imported in re.findall(r'from "\./([^"]+)"', body.decode()):
                    named.add(f"{folder}/{imported}")
                for imported in re.findall(r'from "\.\./([^"]+)"', body.decode()):
                    named.add(f"{folder.rsplit('/', 1)[0]}/{imported}")
        assert {"js/app.js", "js/views/session.js", "js/sse.js", "console.css"} <= named
        for name in named:
            asset = await client.get(f"/console/{name}")
            assert asset.status_code == 200, name
            if name.endswith(".js"):
                assert asset.headers["content-type"].startswith("text/javascript")


async def test_console_without_a_slash_redirects_and_an_unknown_file_is_a_clear_404() -> None:
    async with client_for(FakeStore(), api_key=None) as client:
        bare = await client.get("/console")
        assert bare.status_code == 308 and bare.headers["location"] == "/console/"
        for path in ("/console/nope.js", "/console/../routes/console.py", "/console/js/%2e%2e/index.html"):
            missing = await client.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["error"]["type"] == "not_found_error"


async def test_config_names_jaeger_only_when_configured_and_carries_the_price_table() -> None:
    async with client_for(FakeStore(), api_key=None) as client:
        plain = (await client.get("/console/config.json")).json()
    assert plain == {"jaeger_url": None, "prices": LIST_PRICES}
    async with client_for(FakeStore(), api_key=None, jaeger_url="http://jaeger.test:16686") as client:
        configured = (await client.get("/console/config.json")).json()
    assert configured["jaeger_url"] == "http://jaeger.test:16686"
