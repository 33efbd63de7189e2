"""The TCP ports the stack listens on, where their settings come from, and free-port picking."""

from __future__ import annotations

import dataclasses
import errno
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.settings import renamed

HOST = "127.0.0.1"
#: The lowest port ``Ports.free`` picks (below it: well-known and registered services).
PICK_FROM = 10_000
_EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
#: Not the ``random`` module's generator: a test run that seeds it must not make two concurrent runs
#: pick the same ports.
_RANDOM = random.SystemRandom()


@dataclass(frozen=True)
class PortSetting:
    """One configurable port: the ``Ports`` field, its env var, default and owner."""

    field: str
    env_var: str
    default: int
    component: str
    #: the variable's former name, still read (with a warning) for one release
    old_env_var: str | None = None

    def __post_init__(self) -> None:
        if self.old_env_var:
            renamed(self.env_var, self.old_env_var)


PORT_SETTINGS: tuple[PortSetting, ...] = (
    PortSetting("nats", "CORRAL_NATS_PORT", 4222, "nats"),
    PortSetting("nats_monitor", "CORRAL_NATS_MONITOR_PORT", 8222, "nats"),
    PortSetting("nats_cluster", "CORRAL_NATS_CLUSTER_PORT", 6222, "nats"),
    PortSetting("postgres", "CORRAL_POSTGRES_PORT", 55432, "postgres"),
    PortSetting("bao", "CORRAL_OPENBAO_PORT", 8200, "openbao", "CORRAL_BAO_PORT"),
    PortSetting("bao_cluster", "CORRAL_OPENBAO_CLUSTER_PORT", 8201, "openbao", "CORRAL_BAO_CLUSTER_PORT"),
    PortSetting("gateway", "CORRAL_GATEWAY_PORT", 8080, "gateway"),
    PortSetting("embedded_model", "CORRAL_EMBEDDED_MODEL_PORT", 8090, "embedded-model"),
    PortSetting("metrics", "CORRAL_METRICS_PORT", 9464, "metrics"),
    PortSetting("collector", "CORRAL_COLLECTOR_PORT", 4318, "collector"),
)

#: Ports from ``Ports.metrics`` on that ``Ports.free`` keeps free: one metrics endpoint per service
#: (``corral.devstack.services.metrics_port``: four services, the embedded model, harnesses 1 to 11,
#: the second and later replicas of the four services (four ports per replica number), then
#: harnesses 12 and on).
METRICS_BLOCK = 64
#: Harnesses a stack runs at most (``CORRAL_HARNESS_COUNT``): each has its own port in the metrics block.
HARNESSES_MAX = 43
#: Gateways a stack runs at most (``CORRAL_GATEWAY_COUNT``): gateway ``n`` listens on ``Ports.gateway``
#: plus ``n - 1``, so ``Ports.free`` keeps this many consecutive ports free from it.
GATEWAYS_MAX = 5

#: Most NATS servers a stack runs (``CORRAL_NATS_CLUSTER``): node ``i`` of a cluster listens on each
#: of ``Ports.nats``, ``nats_monitor`` and ``nats_cluster`` plus ``i - 1``, so ``Ports.free`` keeps
#: this many consecutive ports free from each.
NATS_NODES_MAX = 5
_NATS_BLOCKS = ("nats", "nats_monitor", "nats_cluster")

_SETTING_BY_FIELD = {setting.field: setting for setting in PORT_SETTINGS}


def port_setting(field: str) -> PortSetting:
    return _SETTING_BY_FIELD[field]


@dataclass(frozen=True)
class Ports:
    """Every port of one stack. ``Ports()`` is the ``make up`` defaults."""

    nats: int = 4222
    nats_monitor: int = 8222
    #: the first node's cluster route port (only with ``CORRAL_NATS_CLUSTER`` > 1)
    nats_cluster: int = 6222
    postgres: int = 55432
    bao: int = 8200
    bao_cluster: int = 8201
    gateway: int = 8080
    embedded_model: int = 8090
    #: the first of the services' metrics ports (each service's is this plus its offset)
    metrics: int = 9464
    #: the trace collector's OTLP/HTTP port (only with ``CORRAL_TRACING=1``)
    collector: int = 4318

    @classmethod
    def free(cls) -> Ports:
        """Distinct ports that are free right now, so a test stack never clashes with ``make up``.

        Each is picked at random outside the kernel's ephemeral range (``free_block``), so an
        outgoing connection made by any process between the pick and the listener's bind cannot
        take it.
        """
        sizes = {setting.field: 1 for setting in PORT_SETTINGS}
        sizes.update(dict.fromkeys(_NATS_BLOCKS, NATS_NODES_MAX))
        sizes.update(gateway=GATEWAYS_MAX, metrics=METRICS_BLOCK)
        taken: set[int] = set()
        picked: dict[str, int] = {}
        for field, size in sorted(sizes.items(), key=lambda item: -item[1]):  # the largest blocks first
            picked[field] = free_block(size, avoid=taken)
            taken.update(range(picked[field], picked[field] + size))
        return cls(**picked)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Ports:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(str(v)) for k, v in data.items() if k in known})

    def replace(self, **changes: int) -> Ports:
        return dataclasses.replace(self, **changes)


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when something already listens on (or otherwise holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT after a recent ``down`` is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ephemeral_ports() -> range:
    """The ports the kernel gives outgoing connections (Linux's ``ip_local_port_range``)."""
    try:
        low, high = (int(n) for n in Path(_EPHEMERAL_RANGE_FILE).read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_block(size: int, *, avoid: set[int]) -> int:
    """The first of ``size`` consecutive ports that are all free right now (none of them in ``avoid``),
    picked at random from ``PICK_FROM`` on, outside ``ephemeral_ports()``: a port the kernel may hand
    an outgoing connection is never picked, so none is taken before its server binds it."""
    ephemeral = ephemeral_ports()
    spans = [range(PICK_FROM, ephemeral.start - size + 1), range(ephemeral.stop, 65536 - size + 1)]
    spans = [span for span in spans if len(span)] or [range(PICK_FROM, 65536 - size + 1)]
    for _ in range(200):
        first = _pick(spans)
        block = range(first, first + size)
        if not avoid.intersection(block) and not any(port_in_use(p) for p in block):
            return first
    raise OSError(f"found no {size} consecutive free ports on {HOST}")


def _pick(spans: list[range]) -> int:
    """A port drawn uniformly from all of ``spans``."""
    index = _RANDOM.randrange(sum(len(span) for span in spans))
    for span in spans:
        if index < len(span):
            return span[index]
        index -= len(span)
    raise AssertionError("unreachable: the index is below the spans' total length")
