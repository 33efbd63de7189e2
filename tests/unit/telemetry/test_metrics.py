"""``corral.telemetry.metrics``: names that follow the conventions, errors counted from log records,
the endpoint in its thread, labelled gauges set from samples; and the runner serving it."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.runner import Lifetime, Refused, serve
from corral.settings import MetricsSettings
from corral.telemetry import metrics
from corral.telemetry.metrics import REGISTRY, ErrorCounter


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (metrics.counter, "corral_unit_things"),  # a counter without _total
        (metrics.counter, "unit_things_total"),  # not Corral's prefix
        (metrics.histogram, "corral_unit_wait"),  # a histogram without its unit
        (metrics.gauge, "unit_level"),
    ],
)
def test_names_off_the_conventions_are_refused(make: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make(name, "doc")  # type: ignore[operator]


def test_error_records_are_counted_by_logger_and_exception_type_and_nothing_below_error() -> None:
    log = logging.getLogger("corral.unit.errors")
    log.propagate = False
    log.addHandler(ErrorCounter())
    before_none = value("corral_errors_total", logger="corral.unit.errors", exception="none")
    before_key = value("corral_errors_total", logger="corral.unit.errors", exception="KeyError")
    log.warning("not counted")
    log.error("counted, no exception")
    try:
        {}["missing"]
    except KeyError:
        log.exception("counted with its exception")
    assert value("corral_errors_total", logger="corral.unit.errors", exception="none") == before_none + 1
    assert value("corral_errors_total", logger="corral.unit.errors", exception="KeyError") == before_key + 1


def test_count_errors_installs_one_counter_however_often_it_is_called() -> None:
    root = logging.Logger("unit-root")
    metrics.count_errors(root)
    metrics.count_errors(root)
    assert sum(isinstance(h, ErrorCounter) for h in root.handlers) == 1


@pytest.fixture
def registered() -> Iterator[list[Collector]]:
    """Metrics a test adds to the process's registry, taken out again after it (the registry is the
    services' own: ``tests/contract/test_metrics_table.py`` compares it with the README)."""
    added: list[Collector] = []
    yield added
    for collector in added:
        REGISTRY.unregister(collector)


def test_the_endpoint_serves_the_registry_and_frees_its_port_when_closed(registered: list[Collector]) -> None:
    hits = metrics.counter("corral_unit_endpoint_hits_total", "hits, for this test")
    registered.append(hits)
    hits.inc(3)
    endpoint = metrics.serve("127.0.0.1", 0)
    try:
        families = scrape(endpoint.port)
    finally:
        endpoint.close()
    assert families["corral_unit_endpoint_hits"] == [({}, 3.0)]
    assert "corral_unit_endpoint_hits_created" not in str(families)  # no _created series
    assert "process_cpu_seconds" in families
    with socket.socket() as again, pytest.raises(ConnectionRefusedError):  # nothing listens any more
        again.connect(("127.0.0.1", endpoint.port))


def test_a_labelled_gauge_loses_the_labels_a_sample_no_longer_has(registered: list[Collector]) -> None:
    pools = metrics.gauge("corral_unit_pool_ready", "ready, per config", ("config",))
    registered.append(pools)
    metrics.set_labelled(pools, {"a": 2, "b": 1})
    metrics.set_labelled(pools, {"b": 0, "c": 4})
    assert value("corral_unit_pool_ready", config="a") == 0.0
    assert REGISTRY.get_sample_value("corral_unit_pool_ready", {"config": "a"}) is None
    assert REGISTRY.get_sample_value("corral_unit_pool_ready", {"config": "c"}) == 4


async def test_a_failing_sample_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    again = asyncio.Event()

    async def refresh() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the bus is away")
        again.set()

    sampling = asyncio.ensure_future(metrics.sample(refresh, interval_s=0.01, name="unit"))
    try:
        async with asyncio.timeout(5):
            await again.wait()
    finally:
        sampling.cancel()
    assert "could not refresh the unit metrics" in caplog.text


class UnitMetrics(MetricsSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_UNIT_METRICS_", frozen=True, extra="ignore")


class UnitSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_UNIT_", frozen=True, extra="ignore")

    metrics: UnitMetrics = Field(default_factory=UnitMetrics)


async def test_the_runner_serves_metrics_while_the_service_runs_and_not_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CORRAL_UNIT_METRICS_PORT", str(port))
    stop, ready = asyncio.Event(), asyncio.Event()

    async def build(_settings: UnitSettings, life: Lifetime) -> None:
        life.ready()

    running = asyncio.ensure_future(serve("unit", build, UnitSettings(), stop, ready=ready))
    async with asyncio.timeout(10):
        await ready.wait()
        families = await asyncio.to_thread(scrape, port)
        stop.set()
        await running
    assert "corral_errors" in families
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port)


async def test_a_taken_metrics_port_refuses_the_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("CORRAL_UNIT_METRICS_PORT", str(taken.getsockname()[1]))

        async def build(_settings: UnitSettings, life: Lifetime) -> None:
            life.ready()

        with pytest.raises(Refused, match="set CORRAL_UNIT_METRICS_PORT to a free port"):
            await serve("unit", build, UnitSettings(), asyncio.Event())


async def test_no_port_no_endpoint() -> None:
    stop, ready = asyncio.Event(), asyncio.Event()

    async def build(_settings: UnitSettings, life: Lifetime) -> None:
        life.ready()

    running = asyncio.ensure_future(serve("unit", build, UnitSettings(), stop, ready=ready))
    async with asyncio.timeout(5):
        await ready.wait()
        stop.set()
        await running
    assert UnitSettings().metrics.port is None
