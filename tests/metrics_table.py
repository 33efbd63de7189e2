"""The top README's "Metrics" table, and the metric names a registry or a scrape holds, for the
tests that keep the two equal (``tests/contract/test_metrics_table.py``, ``tests/e2e/test_metrics.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client.metrics_core import Metric

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- metrics table:"
END = "<!-- end of the metrics table -->"

#: The services with a metrics endpoint, and which of them are on the bus (they import ``corral.bus``).
SERVICES = ("gateway", "session-store", "harness", "sandbox-manager", "credential-proxy", "embedded-model")
BUS_SERVICES = ("gateway", "session-store", "harness", "sandbox-manager", "credential-proxy")
EXPOSED_BY = {"every service": SERVICES, "every bus service": BUS_SERVICES}


def documented(readme: str | None = None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """metric name -> (type, the services exposing it), from the README's table."""
    text = README.read_text() if readme is None else readme
    table = text[text.index(BEGIN) : text.index(END)]
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`corral_"):
            continue
        name, kind, _labels, exposed, _meaning = cells
        rows[name.strip("`")] = (kind, EXPOSED_BY.get(exposed, (exposed,)))
    return rows


def documented_for(service: str) -> dict[str, str]:
    """metric name -> type, for what ``service`` exposes according to the README."""
    return {name: kind for name, (kind, services) in documented().items() if service in services}


def exposed(families: Iterable[Metric]) -> dict[str, str]:
    """metric name (a counter's with its ``_total``) -> type, for Corral's own families (``corral_*``)."""
    found: dict[str, str] = {}
    for family in families:
        if not family.name.startswith("corral_"):
            continue
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found[name] = family.type
    return found
