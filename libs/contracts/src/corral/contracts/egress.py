"""Egress operations: the request and reply of every ``corral.rpc.egress.<op>`` call.

A sandbox has no network of its own (Docker network ``none``: loopback only). When its environment
allows network access, its only way out is an HTTP proxy the credential-proxy runs for that one
session on a unix socket: ``<CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR>/<session_id>/proxy.sock`` on the host
(``EGRESS_SOCKET_NAME``), in a directory that holds nothing else. The sandbox-manager asks for that
proxy with ``open`` before it starts the sandbox, bind-mounts the reply's ``directory`` read-only at
``SANDBOX_EGRESS_DIR`` in the container, where the exec agent relays ``127.0.0.1:SANDBOX_PROXY_PORT``
to the socket, points the sandbox's ``HTTP_PROXY``/``HTTPS_PROXY`` at
``http://127.0.0.1:SANDBOX_PROXY_PORT``, and drops the proxy with ``close`` when the sandbox is gone.
The directory is mounted rather than the socket so that a restarted credential-proxy, which binds a
new socket in the same directory, is reached by sandboxes already running.

Which session a connection belongs to is known only from the socket it arrived on, never from
anything the sandbox sends: each socket applies its own session's policy.

Every reply is a ``corral.contracts.rpc.RpcReply``: ``result`` on success, or an Anthropic ``error``
detail: ``invalid_request_error`` for a request that can never succeed (a malformed field, named in
the message; ``details.error_code`` ``egress_not_configured`` when this deployment serves no egress,
i.e. the credential-proxy has no ``CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR``), ``api_error`` with ``error_code``
``egress_listen_failed`` when the socket cannot be made, ``overloaded_error`` while the
credential-proxy is stopping.

``open`` is idempotent per session: opening again returns the same ``directory`` and applies the
new policy to connections made from then on (open ones carry on). The credential-proxy records every
open session in ``EGRESS_BUCKET`` (key: the session id) and serves those sessions again, on new
sockets in the same directories, when it restarts. ``close`` removes the socket and the directory:
call it only once the sandbox is gone (a later ``open`` makes a new directory, which the mount of a
container still running would not show).

**Credentials at egress.** A policy that names the session's ``workspace_id`` and ``vault_ids`` makes
the proxy substitute the vaults' ``environment_variable`` credentials: ``open`` answers with a
placeholder for each credential's ``secret_name`` (``credential_environment``, random, unique per
grant and credential, not derived from the secret) and the PEM of a CA made for this grant only
(``ca_certificate``). The sandbox-manager sets the variables to the placeholders and makes the
sandbox trust the CA. A ``CONNECT`` to a host one of the credentials is bound to (its ``networking``)
is then intercepted: the proxy answers TLS with a certificate for the host signed by that CA,
verifies the real server itself, and replaces each bound credential's placeholder with its value in
request header values and/or bodies (its ``injection_location``). Plain ``http://`` requests to a
bound host are substituted the same way. Any other host gets the bytes as sent, placeholder and all;
``CONNECT`` to it stays a blind tunnel.

``allowed_hosts`` entries, as both sides accept them (``allowed_host_problem``):

- ``example.com``: exactly that host (case-insensitive; a trailing dot is ignored);
- ``*.example.com`` or ``.example.com``: any subdomain of ``example.com``, at any depth, but not
  ``example.com`` itself (list it too to allow it);
- ``203.0.113.7`` or ``2001:db8::7`` (brackets optional): exactly that IP address, still only when
  the credential-proxy's address rules let it through (a public address that is not one of its
  machine's, or one its operator lists in ``CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES``).

An entry names a host only: no scheme, port, path or ``user@``. Which ports may be reached is the
credential-proxy's setting (``CORRAL_CREDENTIAL_PROXY_EGRESS_PORTS``, 80 and 443 by default), the same for everyone.

**Credential hosts that could not be reached.** When the sandbox asks for a host one of its
``environment_variable`` credentials is bound to and the proxy cannot get it there (the environment's
policy or the address rules refuse the host, it does not resolve or connect, or its TLS cannot be
verified), the sandbox gets the proxy's 403 or 502 and the proxy notes the credential for the
session: at most once per credential until the note is taken, and only so many per session and so
many sessions (the oldest dropped first). The harness, which alone writes the session's log, takes
the notes with ``failures`` after each tool call that ran in the sandbox and logs one
``credential_host_unreachable_error`` per credential. Taking empties the session's notes; a
credential-proxy restart loses notes not taken yet (the sandbox saw its 403/502 anyway).

**Hosts.** A session's socket is made on the machine of the credential-proxy that opened it, and only
a Docker engine on that machine can mount it. Every credential-proxy serves each operation twice: on
``egress_rpc(op)`` in the queue group ``credential-proxy`` (any of them: right when they all share the
sandboxes' machine) and on ``egress_host_rpc(host, op)`` in the queue group ``credential-proxy.<host>``
(``on_egress_host``), ``<host>`` its ``CORRAL_CREDENTIAL_PROXY_HOST_ID``. A sandbox-manager told the host
of its machine's credential-proxy (``CORRAL_SANDBOX_EGRESS_HOST``) asks that one only, so sandboxes on
several machines each get a socket on their own machine. Each grant names the host that made it, and
a restarted credential-proxy serves again only its own host's grants (and those naming none). The
notes of ``failures`` are in the memory of the credential-proxy holding the socket, so the harness
asks that one too: the sandbox host the session is placed on advertises its egress host
(``corral.contracts.sandbox.SandboxHost.egress_host``) and the harness sends ``failures`` to
``on_egress_host(FAILURES, egress_host)``; with no placement, or a host naming no egress host, it asks
the queue group (one machine).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from typing import Annotated, Final, TypeVar

from pydantic import AfterValidator, BaseModel, Field

from corral.contracts.operation import Operation, operation
from corral.contracts.repositories import RepositoryAccess
from corral.contracts.rpc import Message

# Subjects, queues and buckets are defined with every other name on the bus in ``subjects``.
from corral.contracts.subjects import EGRESS_BUCKET as EGRESS_BUCKET
from corral.contracts.subjects import EGRESS_QUEUE as EGRESS_QUEUE
from corral.contracts.subjects import EGRESS_RPC_WILDCARD as EGRESS_RPC_WILDCARD
from corral.contracts.subjects import egress_host_rpc as egress_host_rpc
from corral.contracts.subjects import egress_rpc as egress_rpc

# --- the rest of the contract ---------------------------------------------------------------------------

# --- where the proxy is reached ------------------------------------------------------------------------
#: The session's proxy socket, the only entry of its directory (``EgressOpened.directory``).
EGRESS_SOCKET_NAME: Final = "proxy.sock"
#: Where the sandbox-manager mounts ``EgressOpened.directory`` (read-only) inside the sandbox, so the
#: proxy is ``/run/corral/egress/proxy.sock`` there.
SANDBOX_EGRESS_DIR: Final = "/run/corral/egress"
#: The port on the sandbox's loopback where the exec agent relays to the proxy socket: what
#: ``HTTP_PROXY``/``HTTPS_PROXY`` point at inside the sandbox (``http://127.0.0.1:3128``).
SANDBOX_PROXY_PORT: Final = 3128

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
    FAILURES = "failures"


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


AllowedHost = Annotated[str, AfterValidator(_check_allowed_host)]


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
    repositories: list[RepositoryAccess] = Field(
        default_factory=list,
        description="the session's repositories, reached through the git proxy at "
        "http://git.corral.invalid/<resource_id> (corral.contracts.repositories), whatever allowed_hosts says",
    )
    workspace_id: str | None = Field(
        default=None, description="the session's workspace: its vaults are read in that workspace only"
    )
    vault_ids: list[str] = Field(
        default_factory=list,
        description="the session's vaults: their environment_variable credentials are substituted at egress "
        "(see 'Credentials at egress' above)",
    )


class OpenEgress(Message):
    """Give the session a proxy on its own unix socket (idempotent, see the module docstring)."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session the proxy serves")
    policy: EgressPolicy = Field(description="what the sandbox may reach; replaces the previous policy on re-open")


class EgressOpened(Message):
    """Where the session's proxy socket is: ``<directory>/<socket_name>`` on the host."""

    session_id: str = Field(description="the session the proxy serves")
    directory: str = Field(
        description="absolute path on the credential-proxy's host, "
        "<CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR>/<session_id>, holding only the socket; the sandbox-manager "
        "mounts it read-only at SANDBOX_EGRESS_DIR (/run/corral/egress)"
    )
    socket_name: str = Field(description="the proxy's unix socket in directory (EGRESS_SOCKET_NAME, proxy.sock)")
    credential_environment: dict[str, str] = Field(
        default_factory=dict,
        description="for each environment_variable credential of the policy's vaults, its secret_name and the "
        "placeholder the sandbox's environment holds in its place (never the secret)",
    )
    ca_certificate: str | None = Field(
        default=None,
        description="PEM of the session's interception CA, which the sandbox (and nothing else) trusts; "
        "None when the session has no environment_variable credential",
    )


class CloseEgress(Message):
    """Stop the session's proxy, close its connections and forget its grant."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session whose proxy to stop")


class EgressClosed(Message):
    closed: bool = Field(description="false when the session had no proxy here")


class TakeCredentialHostFailures(Message):
    """Take (and forget) what the session's proxy noted about credential hosts it could not reach."""

    session_id: str = Field(pattern=SESSION_ID_PATTERN, description="the session whose notes to take")


class CredentialHostFailure(Message):
    """One ``environment_variable`` credential whose bound host the session's sandbox could not reach."""

    credential_id: str = Field(description="the credential (never its value)")
    vault_id: str = Field(description="the vault holding it")
    host: str = Field(description="the host the sandbox asked for (first failure since the last take)")
    port: int = Field(description="the port it asked for")
    reason: str = Field(description="why the proxy could not reach it, as the sandbox was told (403 or 502)")
    attempts: int = Field(default=1, ge=1, description="failed connections for this credential since the last take")


class CredentialHostFailures(Message):
    failures: list[CredentialHostFailure] = Field(
        default_factory=list, description="one per credential, in the order they first failed; empty for none"
    )


# --- operations ----------------------------------------------------------------------------------------
_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _egress(name: str, request: type[_Req], reply: type[_Rep], *, bounded: bool = False) -> Operation[_Req, _Rep]:
    return operation(
        name, egress_rpc(name), request, reply, queue=EGRESS_QUEUE, service="credential-proxy", bounded=bounded
    )


class EgressOps:
    """Every ``corral.rpc.egress.<op>`` operation (queue group ``credential-proxy``)."""

    OPEN: Final = _egress(EgressOp.OPEN, OpenEgress, EgressOpened)
    CLOSE: Final = _egress(EgressOp.CLOSE, CloseEgress, EgressClosed)
    #: Asked by the harness (its only egress operation), after each tool call that ran in the sandbox.
    FAILURES: Final = _egress(EgressOp.FAILURES, TakeCredentialHostFailures, CredentialHostFailures, bounded=True)
    #: What only the credential-proxy holding a session's socket can answer (each served on its host's subject too).
    HOSTED: Final = (OPEN, CLOSE, FAILURES)


def egress_host_queue(host: str) -> str:
    """The queue group of one host's credential-proxy subjects (replicas on one machine share it)."""
    return f"{EGRESS_QUEUE}.{host}"


@functools.cache
def on_egress_host(op: Operation[_Req, _Rep], host: str) -> Operation[_Req, _Rep]:
    """``op`` as served by the credential-proxy of host ``host`` only (``egress_host_rpc(host, op.name)``)."""
    return dataclasses.replace(op, subject=egress_host_rpc(host, op.name), queue=egress_host_queue(host))
