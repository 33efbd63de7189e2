"""Sandbox hosts: where each host advertises itself, where a session's placement is kept, and the
subjects that reach one host (``corral.contracts.sandbox`` says how placement works)."""

from __future__ import annotations

from typing import Final

from corral.contracts.subjects import KeyValueSpec

#: Every sandbox host's advertisement (``SandboxHost``), key ``<host_id>``, rewritten every
#: ``SANDBOX_HOST_BEAT_S``; an entry not rewritten for ``SANDBOX_HOST_TTL_S`` expires (the host is gone).
SANDBOX_HOSTS_BUCKET: Final = "corral_sandbox_hosts"
#: Which host holds each session's sandbox (``SandboxPlacement``), key ``<session_id>``.
SANDBOX_PLACEMENTS_BUCKET: Final = "corral_sandbox_placements"
SANDBOX_HOST_BEAT_S: Final = 2.0
SANDBOX_HOST_TTL_S: Final = 10.0
#: A placement not rewritten for this long is forgotten (the sandbox is long gone: ``CORRAL_SANDBOX_IDLE_S``).
SANDBOX_PLACEMENT_TTL_S: Final = 30 * 86400.0
#: What a sandbox host id looks like: one subject token.
SANDBOX_HOST_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"


def sandbox_hosts_spec() -> KeyValueSpec:
    return KeyValueSpec(
        name=SANDBOX_HOSTS_BUCKET,
        owner="sandbox-manager",
        description="sandbox hosts: each one's free capacity and warm pool, rewritten while it runs",
        ttl_s=SANDBOX_HOST_TTL_S,
    )


def sandbox_placements_spec() -> KeyValueSpec:
    return KeyValueSpec(
        name=SANDBOX_PLACEMENTS_BUCKET,
        owner="sandbox-manager",
        description="the sandbox host holding each session's sandbox, chosen by the harness",
        ttl_s=SANDBOX_PLACEMENT_TTL_S,
    )
