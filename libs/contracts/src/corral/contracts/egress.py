"""Egress operations: the request and reply of every ``corral.rpc.egress.<op>`` call.

A sandbox whose environment allows network access sits on a network with no route out; its only
way out is an HTTP proxy the credential-proxy runs for that one session, listening on an address of
the host that the sandbox can reach (the gateway address of the session's network). The
sandbox-manager asks for that proxy with ``open`` before it starts the sandbox, points the
sandbox's ``HTTP_PROXY``/``HTTPS_PROXY`` at the ``proxy_url`` of the reply, and drops it with
``close`` when the sandbox goes away. Every reply is a ``corral.contracts.rpc.RpcReply``:
``result`` on success, or an Anthropic ``error`` detail (``invalid_request_error`` for a request
that can never succeed, such as a ``listen_host`` that is not an address of the host).

``open`` is idempotent per session: opening again with the same ``listen_host`` returns the same
``proxy_url`` and applies the new policy to connections made from then on; a different
``listen_host`` moves the session's proxy there (the old listener and its connections are closed).
The credential-proxy records every open session in ``EGRESS_BUCKET`` (key: the session id) and
serves those sessions again when it restarts.

``allowed_hosts`` entries, as both sides accept them (``allowed_host_problem``):

- ``example.com``: exactly that host (case-insensitive; a trailing dot is ignored);
- ``*.example.com`` or ``.example.com``: any subdomain of ``example.com``, at any depth, but not
  ``example.com`` itself (list it too to allow it);
- ``203.0.113.7`` or ``2001:db8::7`` (brackets optional): exactly that IP address, still only when
  it is a public address.

An entry names a host only: no scheme, port, path or ``user@``. Which ports may be reached is the
credential-proxy's setting (``CORRAL_EGRESS_PORTS``, 80 and 443 by default), the same for everyone.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from corral.contracts.rpc import Message

# --- subjects and buckets ------------------------------------------------------------------------------
EGRESS_QUEUE: Final = "credential-proxy"
EGRESS_RPC_WILDCARD: Final = "corral.rpc.egress.>"

#: The credential-proxy's egress grants: key ``<session_id>``, the listener and policy it serves.
EGRESS_BUCKET: Final = "corral_egress"

#: What a session id must look like to get a proxy (it is also the grant's key).
SESSION_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,128}$"

#: Longest ``allowed_hosts`` entry (a DNS name is at most 253 characters, plus ``*.`` and a final dot).
ALLOWED_HOST_MAX_LENGTH: Final = 256

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
#: A last label like these makes the C resolver read a name as an IPv4 address (``2130706433``,
#: ``0x7f.1``), so no such name is a host name here.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


class EgressOp:
    """Operation names; each is the last token of its request subject."""

    OPEN = "open"
    CLOSE = "close"


def egress_rpc(op: str) -> str:
    """Request subject of an egress operation (``open`` -> ``corral.rpc.egress.open``)."""
    return f"corral.rpc.egress.{op}"


def is_host_name(name: str) -> bool:
    """Whether ``name`` (lower case, no trailing dot) is a DNS host name the proxy accepts."""
    return (
        0 < len(name) <= 253
        and _HOST_NAME.fullmatch(name) is not None
        and _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]) is None
    )


def allowed_host_problem(entry: str) -> str | None:
    """Why ``entry`` is not an acceptable ``allowed_hosts`` entry, or ``None`` when it is."""
    if not entry or len(entry) > ALLOWED_HOST_MAX_LENGTH:
        return f"an allowed_hosts entry is 1 to {ALLOWED_HOST_MAX_LENGTH} characters"
    if "://" in entry or "/" in entry or "@" in entry:
        return f"{entry!r} is not a host name: give the host alone (example.com), without scheme, user or path"
    literal = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        return None
    name = entry.lower()
    if name.startswith("*."):
        name = name[2:]
    elif name.startswith("."):
        name = name[1:]
    name = name.removesuffix(".")
    if ":" in name:
        return f"{entry!r} names a port: give the host alone (the ports the proxy reaches are set for the deployment)"
    if not is_host_name(name):
        return (
            f"{entry!r} is not a host name: use letters, digits, '-' and '_' in dot-separated labels, "
            "the last one not a number (example.com, *.example.com), an IP address in its usual form, "
            "or punycode (xn--) for international names"
        )
    return None


def _check_allowed_host(entry: str) -> str:
    problem = allowed_host_problem(entry)
    if problem is not None:
        raise ValueError(problem)
    return entry


def _check_listen_host(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address: give the address the sandbox reaches the proxy on") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{value} cannot be listened on for one session: give the session network's gateway address")
    return str(address)


AllowedHost = Annotated[str, AfterValidator(_check_allowed_host)]
ListenHost = Annotated[str, AfterValidator(_check_listen_host)]


# --- messages ------------------------------------------------------------------------------------------
class EgressPolicy(Message):
    """Where a session's sandbox may connect to through its proxy.

    Only public addresses are ever reached, whatever the policy says: a host that resolves to a
    loopback, private, link-local, CGNAT, multicast or reserved address is refused.
    """

    allowed_hosts: list[AllowedHost] | None = Field(
        default=None,
        description="None: any public host (networking 'unrestricted'). A list: those hosts only (networking "
        "'limited'; an empty list allows nothing beyond the package registries). Entries: example.com, "
        "*.example.com or .example.com (subdomains), or an IP address.",
    )
    allow_package_managers: bool = Field(
        default=False,
        description="also allow the public package registries (PyPI, npm, crates.io, RubyGems, the Go proxy, Debian)",
    )


class OpenEgress(Message):
    """Give the session a proxy on ``listen_host`` (idempotent, see the module docstring)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session the proxy serves")
    listen_host: ListenHost = Field(
        description="an IP address of the credential-proxy's host that the sandbox reaches (the gateway address "
        "of the session's network; 127.0.0.1 in tests)"
    )
    policy: EgressPolicy = Field(description="what the sandbox may reach; replaces the previous policy on re-open")


class EgressOpened(Message):
    session_id: str = Field(description="the session the proxy serves")
    proxy_url: str = Field(description="http://<listen_host>:<port>: what HTTP_PROXY and HTTPS_PROXY point at")


class CloseEgress(Message):
    """Stop the session's proxy, close its connections and forget its grant."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session whose proxy to stop")


class EgressClosed(Message):
    closed: bool = Field(description="false when the session had no proxy here")
