"""What the agent is given and what a tool gives back: the config argument, results and tool errors."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The wire protocol's version, in every ``ping`` reply.
PROTOCOL = 1
#: How often loops that wait on a deadline or a socket look again.
POLL_S = 0.05


@dataclass(frozen=True)
class Config:
    root: str = "/workspace"
    output_limit: int = 8 * 2**20
    #: Largest piece of a reply's text (UTF-8 bytes) sent in one line; a longer text goes in parts.
    part_bytes: int = 163_840
    default_timeout_ms: int = 120_000
    max_timeout_ms: int = 600_000
    workers: int = 8
    egress_socket: str | None = None
    egress_port: int = 3128
    egress_connections: int = 64
    #: The session's egress CA (PEM), trusted with the image's own CAs through ``egress_ca_bundle``.
    egress_ca: str | None = None
    egress_ca_bundle: str | None = None
    #: Build mode (an environment image's build container): run this script and exit with its code.
    build_script: str | None = None
    #: Variables added to the build script's environment (the proxy variables).
    build_environment: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    text: str
    is_error: bool = False


class ToolError(Exception):
    """A tool failed in a way the model should read and can recover from."""
