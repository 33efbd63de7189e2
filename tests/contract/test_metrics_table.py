"""The README's "Metrics" table lists exactly the metrics the services define, with their types: a
metric added, renamed or removed without its row fails here (``tests/e2e/test_metrics.py`` checks the
same against what each running service really serves)."""

from __future__ import annotations

import importlib

from corral.telemetry.metrics import REGISTRY
from tests.metrics_table import README, documented, exposed

#: Every module that defines metrics (importing one registers its metrics in this process's registry).
METRIC_MODULES = (
    "corral.telemetry.metrics",
    "corral.bus.metrics",
    "corral.gateway.metrics",
    "corral.session_store.metrics",
    "corral.harness.metrics",
    "corral.sandbox_manager.metrics",
    "corral.credential_proxy.metrics",
)


def test_the_readme_lists_every_metric_the_services_define_and_no_other() -> None:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    defined = exposed(REGISTRY.collect())
    listed = {name: kind for name, (kind, _services) in documented().items()}
    assert set(defined) - set(listed) == set(), "metrics missing from the README's Metrics table"
    assert set(listed) - set(defined) == set(), "the README's Metrics table lists metrics no service defines"
    assert listed == defined, "the README's Metrics table has a wrong type"


def test_every_row_of_the_table_is_read() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `corral_")]
    assert len(documented()) == len(rows) > 20
