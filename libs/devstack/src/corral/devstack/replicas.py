"""How many of each service a stack runs, and what the second and later replicas are called.

The first replica of a kind keeps its plain name (``gateway``, ``session-store``, ``credential-proxy``,
``sandbox-manager``): a stack with the default counts is exactly the one-of-each stack. Replica ``n``
(2 and on) is ``<kind>-<n>``; harnesses are always numbered (``harness-1``...). Where a replica
differs from the first:

- ``gateway-n`` listens on ``CORRAL_GATEWAY_PORT + n - 1`` (8081, 8082... by default);
- ``sandbox-manager-n`` is sandbox host ``n``: its own Docker engine (``docker-n``, data root
  ``<the first engine's data root>-host-<n>``, the sandbox image copied into it) and host id
  ``sandbox-host-<n>``;
- every replica has its own metrics port (``metrics_port``).

Pure: nothing here starts anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.devstack.errors import DevstackError
from corral.devstack.ports import GATEWAYS_MAX

#: The kinds a stack can run more than one of (harnesses have ``CORRAL_HARNESS_COUNT``), with the
#: variable that says how many.
COUNT_VARIABLES: dict[str, str] = {
    "gateway": "CORRAL_GATEWAY_COUNT",
    "session-store": "CORRAL_SESSION_STORE_COUNT",
    "credential-proxy": "CORRAL_CREDENTIAL_PROXY_COUNT",
    "sandbox-manager": "CORRAL_SANDBOX_HOSTS",
}
#: Most replicas of one kind (``Ports.free`` keeps this many gateway ports and their metrics ports free).
REPLICAS_MAX = GATEWAYS_MAX
#: The Docker engine of sandbox host ``n`` (2 and on) is called ``docker-<n>``.
DOCKER_PREFIX = "docker-"

_NUMBERED = re.compile(r"^(?P<kind>[a-z-]+?)-(?P<n>[0-9]+)$")


@dataclass(frozen=True)
class Replicas:
    """The count of each kind in ``COUNT_VARIABLES`` (1 when unset)."""

    counts: Mapping[str, int]

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Replicas:
        counts: dict[str, int] = {}
        for kind, var in COUNT_VARIABLES.items():
            raw = environ.get(var, "").strip() or "1"
            if not raw.isdigit() or not 1 <= int(raw) <= REPLICAS_MAX:
                raise DevstackError(f"{var}={raw!r} is not a number from 1 to {REPLICAS_MAX}")
            counts[kind] = int(raw)
        return cls(counts)

    def of(self, kind: str) -> int:
        return self.counts.get(kind, 1)

    def names(self, kind: str) -> list[str]:
        """``gateway``, ``gateway-2``...: the kind's services in start order."""
        return [replica_name(kind, n) for n in range(1, self.of(kind) + 1)]


def replica_name(kind: str, n: int) -> str:
    return kind if n == 1 else f"{kind}-{n}"


def split_name(name: str) -> tuple[str, int]:
    """``gateway-2`` -> ``("gateway", 2)``, ``harness-1`` -> ``("harness", 1)``, ``gateway`` -> ``("gateway", 1)``."""
    match = _NUMBERED.match(name)
    if match is None:
        return name, 1
    return match["kind"], int(match["n"])


def gateway_port(first: int, name: str) -> int:
    """Where gateway replica ``name`` listens: ``first`` (``CORRAL_GATEWAY_PORT``) plus its number less one."""
    return first + split_name(name)[1] - 1


def host_id(n: int) -> str | None:
    """Sandbox host ``n``'s id (None for the first: the manager's default, the machine's name)."""
    return None if n == 1 else f"sandbox-host-{n}"


def host_data_root(first: Path, n: int) -> Path:
    """Where sandbox host ``n``'s engine keeps its images and containers (kept across runs)."""
    return first if n == 1 else first.with_name(f"{first.name}-host-{n}")


def engine_number(name: str) -> int | None:
    """``docker-2`` -> 2; None for any other name."""
    rest = name.removeprefix(DOCKER_PREFIX)
    return int(rest) if rest != name and rest.isdigit() else None
