"""Prometheus metrics: one registry per process, its HTTP endpoint, and errors counted by type.

Each service defines its metrics in one module (``corral.<service>.metrics``) with ``counter``,
``gauge`` and ``histogram`` below, which register them in this process's ``REGISTRY``; libraries
define theirs the same way (``corral.bus.metrics``). Names follow the Prometheus conventions:
``corral_`` then the service, units in the name (``_seconds``, ``_records``), counters end in ``_total``.
The top README's "Metrics" table lists them all (a test keeps it equal to what the services expose).

**Where the exposition runs.** ``serve`` starts prometheus_client's own HTTP server, in a thread: a
scrape (rendering every series, writing the socket) never runs on the service's event loop, so a
slow or stuck scraper cannot delay a turn. Values are only ever *written* on the event loop (a
counter incremented where the work happens, a gauge set by ``sample`` on the loop from state only
the loop touches), and prometheus_client's values are locked, so the thread only reads numbers: no
service state is read from the server thread.

The runner (``corral.runner``) starts the endpoint when the service's settings give it a port
(``CORRAL_<SERVICE>_METRICS_PORT``) and closes it at stop; ``count_errors`` makes every log record at
ERROR count in ``corral_errors_total``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

logger = logging.getLogger(__name__)

# ``_created`` series double every counter and histogram for a timestamp Prometheus does not need.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

#: This process's metrics: what its endpoint serves (the process collector adds CPU, memory, fds).
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

#: Seconds buckets for work measured in milliseconds (a bus request, an append, an HTTP request).
FAST_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds buckets for work measured in seconds (a model request, a container start, a tool call).
SLOW_BUCKETS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Prefix of every metric Corral defines (the process collector's ``process_*`` are the library's).
PREFIX = "corral_"


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    """A counter in ``REGISTRY``; ``name`` ends in ``_total``."""
    if not name.startswith(PREFIX) or not name.endswith("_total"):
        raise ValueError(f"counter {name!r}: start with {PREFIX!r}, end with '_total'")
    return Counter(name, documentation, labels, registry=REGISTRY)


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    """A gauge in ``REGISTRY``."""
    if not name.startswith(PREFIX):
        raise ValueError(f"gauge {name!r}: start with {PREFIX!r}")
    return Gauge(name, documentation, labels, registry=REGISTRY)


def histogram(
    name: str, documentation: str, labels: Sequence[str] = (), *, buckets: Sequence[float] = FAST_BUCKETS
) -> Histogram:
    """A histogram in ``REGISTRY``; ``name`` ends in its unit (``_seconds``)."""
    if not name.startswith(PREFIX) or not name.endswith("_seconds"):
        raise ValueError(f"histogram {name!r}: start with {PREFIX!r}, end with '_seconds'")
    return Histogram(name, documentation, labels, registry=REGISTRY, buckets=buckets)


ERRORS = counter(
    "corral_errors_total",
    "Log records at ERROR or above, by logger and by the type of the exception they carry (none: no exception).",
    ("logger", "exception"),
)


class ErrorCounter(logging.Handler):
    """Counts every record at ERROR or above in ``corral_errors_total`` (it writes nothing)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        exc_type = record.exc_info[0] if record.exc_info else None
        kind = exc_type.__name__ if exc_type is not None else "none"
        ERRORS.labels(logger=record.name, exception=kind).inc()


def count_errors(root: logging.Logger | None = None) -> None:
    """Count the ERROR records of every logger from now on (idempotent; after the log handlers are set)."""
    target = root if root is not None else logging.getLogger()
    if not any(isinstance(handler, ErrorCounter) for handler in target.handlers):
        target.addHandler(ErrorCounter())


@dataclass
class Endpoint:
    """A running metrics endpoint: ``GET /metrics`` (any path answers the same) on ``host:port``."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        """Stop serving and free the port (blocks up to the server's half-second poll)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)


def serve(host: str, port: int) -> Endpoint:
    """Serve ``REGISTRY`` on ``host:port`` (``0``: a free port; see ``Endpoint.port``) in a thread.

    Raises:
        OSError: the address cannot be bound (the port is taken).
    """
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return Endpoint(server, thread)


async def sample(refresh: Callable[[], Awaitable[None]], *, interval_s: float, name: str) -> None:
    """Call ``refresh`` (which sets gauges from state the event loop owns) now and every ``interval_s``,
    forever; a failing refresh is logged and tried again at the next interval."""
    while True:
        try:
            await refresh()
        except Exception:
            logger.warning("could not refresh the %s metrics", name, exc_info=True)
        await asyncio.sleep(interval_s)


def set_labelled(target: Gauge, values: dict[str, float]) -> None:
    """Set a one-label gauge to ``values`` (label value -> value), removing the labels no longer there."""
    present = {value for family in target.collect() for sample in family.samples for value in sample.labels.values()}
    for label in present - values.keys():
        target.remove(label)
    for label, value in values.items():
        target.labels(label).set(value)
