"""The web console (``/console``) in a real browser: Debian's Chromium, headless, driven by Playwright,
against the real stack.

A user signs in with the dev key, opens a session, sends a message and watches the turn run live (the
agent's text appears as it is written), answers the ``always_ask`` confirmation of a bash call with
Allow in the page, sees the sandbox's output and the turn reach idle, and opens the turn's trace
waterfall. The page logs no console error, and every request it makes goes to this gateway's
``/v1`` API or the console's own files. A key of a second workspace sees none of the first's
sessions or agents. Screenshots are written to ``test-artefacts/console/``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anthropic
import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Request, async_playwright, expect

from corral.devstack.stack import Stack
from tests.e2e.flows import unique

pytestmark = pytest.mark.e2e

ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "console"
ASK_BASH = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "bash", "permission_policy": {"type": "always_ask"}}],
}
#: How long the page may take to show what the stack did (a cold sandbox is provisioned in the turn).
SHOWN_WITHIN_MS = 60_000


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is not installed: apt-get install -y chromium (make test installs it)"
    return found


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page, and what it logged and asked for."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.problems: list[str] = []
        self.requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text}")

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)


async def open_console(browser: Browser, stack: Stack, key: str) -> Watched:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(await context.new_page())
    await watched.page.goto(f"{stack.gateway_url}/console/")
    await watched.page.get_by_label("API key").fill(key)
    await watched.page.get_by_role("button", name="Sign in").click()
    await expect(watched.page.get_by_role("heading", name="Sessions")).to_be_visible()
    return watched


async def shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


async def install_script(model: httpx.AsyncClient, name: str, *turns: dict[str, Any]) -> None:
    document = {"scenarios": [{"name": name, "match": f"^{name}", "turns": list(turns)}]}
    answer = await model.post("/_corral/scripts", json=document)
    assert answer.status_code == 200, answer.text


async def test_a_session_runs_live_in_the_console_with_a_confirmation_and_its_trace(
    stack: Stack, client: anthropic.AsyncAnthropic, model: httpx.AsyncClient, browser: Browser
) -> None:
    name = unique("console")
    marker = f"printed-by-{name}"
    await install_script(
        model,
        name,
        {
            "content": [
                {"type": "text", "text": "Let me run that for you, one careful step at a time."},
                {"type": "tool_use", "name": "bash", "input": {"command": f"echo {marker}"}},
            ],
            "chunk_delay_ms": 40,  # the text is written over about a second: the page shows it grow
        },
        {"content": [{"type": "text", "text": "All done: the command printed its marker."}]},
    )
    agent = await client.beta.agents.create(name=f"console {name}", model="claude-sonnet-4-6", tools=[ASK_BASH])
    env = await client.beta.environments.create(name=name)
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, title=f"console {name}")

    watched = await open_console(browser, stack, stack.api_key)
    page = watched.page
    await page.get_by_role("link", name=f"console {name}").click()
    status = page.get_by_test_id("session-status")
    await expect(status).to_have_text("idle")

    await page.get_by_label("Message").fill(f"{name}: print the marker")
    await page.get_by_role("button", name="Send").click()
    # the agent's text, previewed while it is written (dashed border), then the confirmation
    await expect(page.locator(".msg.agent.live")).to_be_visible(timeout=SHOWN_WITHIN_MS)
    await shot(page, "1-live-text")
    allow = page.get_by_role("button", name="Allow")
    await expect(allow).to_be_visible(timeout=SHOWN_WITHIN_MS)
    await expect(page.locator(".msg.agent").first).to_contain_text("one careful step at a time")
    await expect(page.locator(".tool")).to_contain_text(f"echo {marker}")
    await shot(page, "2-requires-action")

    await allow.click()
    await expect(page.locator(".decision.allow")).to_have_text("Allowed", timeout=SHOWN_WITHIN_MS)
    await expect(page.locator(".tool .result")).to_contain_text(marker, timeout=SHOWN_WITHIN_MS)
    await expect(page.get_by_test_id("conversation")).to_contain_text("All done", timeout=SHOWN_WITHIN_MS)
    await expect(page.locator(".turn-end")).to_contain_text("end_turn", timeout=SHOWN_WITHIN_MS)
    await expect(status).to_have_text("idle")
    await shot(page, "3-turn-finished")
    confirmation = [e async for e in client.beta.sessions.events.list(session.id) if e.type == "user.tool_confirmation"]
    assert [e.result for e in confirmation] == ["allow"], "the page's Allow sent one confirmation"

    await page.get_by_role("link", name="Trace").click()
    waterfall = page.get_by_test_id("waterfall")
    await expect(waterfall).to_be_visible()
    for row in ("turn", "model request 1", "model request 2", "bash: confirmation", "tool bash"):
        await expect(waterfall.locator(".span-label", has_text=row).first).to_be_visible()
    await shot(page, "4-trace-waterfall")

    assert watched.problems == [], f"the console logged problems: {watched.problems}"
    gateway = urlsplit(stack.gateway_url)
    elsewhere = [
        url
        for url in watched.requests
        if urlsplit(url).netloc != gateway.netloc or not urlsplit(url).path.startswith(("/v1/", "/console/"))
    ]
    assert not elsewhere, f"the console reached beyond /v1 and its own files: {elsewhere}"
    assert any(urlsplit(url).path == f"/v1/sessions/{session.id}/events/stream" for url in watched.requests)
    await page.context.close()


async def test_a_second_workspace_sees_none_of_the_firsts_objects_in_the_console(
    stack: Stack, client: anthropic.AsyncAnthropic, browser: Browser
) -> None:
    agent = await client.beta.agents.create(name=unique("console-first"), model="claude-sonnet-4-6")
    env = await client.beta.environments.create(name=unique("console-first"))
    first = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, title="first workspace's")
    admin = {"x-api-key": stack.admin_api_key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=admin, timeout=30) as http:
        workspace = (await http.post("/v1/organizations/workspaces", json={"name": unique("console-b")})).json()
        params = {"name": "console-b", "workspace_id": workspace["id"]}
        made = await http.post("/v1/organizations/api_keys", json=params)
        assert made.status_code == 200, made.text
    other = made.json()["key"]

    watched = await open_console(browser, stack, other)
    page = watched.page
    await expect(page.locator("#sessions")).to_contain_text("No sessions match.")
    await page.get_by_role("link", name="Agents").click()
    await expect(page.locator("main")).to_contain_text("No agents yet.")
    await page.goto(f"{stack.gateway_url}/console/#/sessions/{first.id}")
    await expect(page.get_by_role("alert")).to_contain_text("was not found")
    await shot(page, "5-second-workspace")
    await page.context.close()

    # the admin key's console lists the new workspace's key (by its hint, never the key)
    watched = await open_console(browser, stack, stack.admin_api_key)
    await watched.page.get_by_role("link", name="API keys").click()
    keys = watched.page.locator("main table")
    await expect(keys).to_contain_text(made.json()["partial_key_hint"])
    await expect(keys).not_to_contain_text(other)
    await shot(watched.page, "6-api-keys")
    assert watched.problems == [], f"the console logged problems: {watched.problems}"
    await watched.page.context.close()
