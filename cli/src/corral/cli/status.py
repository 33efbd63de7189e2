"""``corral status``: the gateway's ``/health``, every service and what each depends on."""

from __future__ import annotations

import httpx
import typer
from rich.table import Table
from rich.text import Text

from corral.cli.context import root_of
from corral.cli.failure import Failure
from corral.cli.output import out

STYLES = {"ok": "green", "degraded": "yellow"}


def status(ctx: typer.Context) -> None:
    """Whether Corral is up: each service and its dependencies (exit status 1 when any is unavailable)."""
    base_url = root_of(ctx).connection.base_url
    try:
        answer = httpx.get(f"{base_url}/health", timeout=15)
    except httpx.HTTPError as error:
        raise Failure(f"cannot reach Corral at {base_url} ({error}): is it running? (`make up`)") from None
    try:
        health = answer.json()
        overall, services = health["status"], health["services"]
        dependencies = health.get("dependencies", {})
    except (ValueError, KeyError, TypeError):
        raise Failure(f"{base_url}/health answered {answer.status_code} with no health report: is it Corral?") from None
    out.print(Text(f"Corral at {base_url}: {overall}", style=STYLES.get(overall, "red")))
    table = Table("service", "status", "dependencies", box=None, pad_edge=False)
    for service, state in services.items():
        deps = ", ".join(f"{name} {value}" for name, value in dependencies.get(service, {}).items())
        table.add_row(service, Text(state, style=STYLES.get(state, "red")), deps)
    out.print(table)
    if overall == "unavailable":
        raise typer.Exit(1)
