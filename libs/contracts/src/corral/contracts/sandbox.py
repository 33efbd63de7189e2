"""Sandbox-manager operations: the request and reply of every ``corral.rpc.sandbox.<op>`` call.

The harness provisions a session's sandbox ahead of its first tool call (``provision``, without
waiting for the reply), runs built-in tools in it (``execute``), stops a running tool on interrupt
(``cancel``) and drops the sandbox when the session ends (``release``). Every reply is a
``corral.contracts.rpc.RpcReply``: ``result`` on success, or an Anthropic ``error`` detail.

``execute`` is keyed by ``(session_id, tool_use_id)``: the outcome is recorded in the
``TOOL_RESULTS_BUCKET`` key-value bucket before the reply is sent, and a second ``execute`` with the
same key returns the recorded outcome with ``executed: false`` instead of running the tool again. A
tool that fails (bad input, non-zero exit, timeout, a sandbox that died mid-call) is a normal
``ToolOutcome`` with ``is_error: true`` the model can read; an ``RpcReply`` error means the call
could not be attempted at all (invalid ids, no Docker engine: ``error_code: sandbox_unavailable``,
the environment's packages could not be installed: ``packages_not_installed``) and nothing was
recorded, so it may be retried.

While a sandbox-manager handles an ``execute`` it publishes an ``ExecuteHeartbeat`` on
``execute_heartbeat(session_id, tool_use_id)`` every ``EXECUTE_HEARTBEAT_INTERVAL_S``, from the
moment it receives the request until it replies: the first one is the acknowledgement. A caller
that hears none for a few intervals knows the manager serving its call is gone (killed, frozen, cut
off) and sends the same ``execute`` again, to whichever manager is alive; the run-once rule makes
that safe: the new manager answers from the record (the outcome, or "interrupted: outcome unknown"
for a call the dead manager had started), and runs the tool only if no manager ever claimed it. A
manager that is stopping answers a running call with ``error_code: sandbox_manager_stopping``, which
the caller treats the same way.

**Hosts.** A session's sandbox lives on one sandbox host: a sandbox-manager and the Docker engine it
drives, named by its host id (``CORRAL_SANDBOX_HOST_ID``). Every manager serves each operation twice:
on ``corral.rpc.sandbox.<op>`` in the queue group ``sandbox-manager`` (any manager; what a deployment
with one host needs) and on ``sandbox_host_rpc(host, op)`` in the queue group
``sandbox-manager.<host>`` (that host only: ``on_host``). While it serves, it rewrites its
``SandboxHost`` advertisement in ``SANDBOX_HOSTS_BUCKET`` every ``SANDBOX_HOST_BEAT_S``; an entry not
rewritten for ``SANDBOX_HOST_TTL_S`` expires. The caller (the harness) places a session on a host the
first time it needs its sandbox, from those advertisements (ready, with room, a warm sandbox first),
records the choice in ``SANDBOX_PLACEMENTS_BUCKET`` (``SandboxPlacement``, created with
compare-and-set, so two callers agree) and sends every later call of the session to that host. When
the host stops answering (nothing serves its subject, or its advertisement expired) the placement
moves to another host; the workspace is lost with the host, and the new host's first outcome for the
session says so. A host whose sandboxes' egress goes through one machine's credential-proxy names it
(``SandboxHost.egress_host``), so the caller asks that credential-proxy what it noted about the
session (``corral.contracts.egress``, *Hosts*). With no advertisement at all (managers older than
hosts), calls go to the queue group.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, Field

from corral.contracts.operation import Operation, operation
from corral.contracts.repositories import RepositoryFailure, RepositoryMount
from corral.contracts.rpc import Message

# Subjects, queues and buckets are defined with every other name on the bus in ``subjects``.
from corral.contracts.sandbox_hosts import SANDBOX_HOST_BEAT_S as SANDBOX_HOST_BEAT_S
from corral.contracts.sandbox_hosts import SANDBOX_HOST_ID_PATTERN as SANDBOX_HOST_ID_PATTERN
from corral.contracts.sandbox_hosts import SANDBOX_HOSTS_BUCKET as SANDBOX_HOSTS_BUCKET
from corral.contracts.sandbox_hosts import SANDBOX_PLACEMENTS_BUCKET as SANDBOX_PLACEMENTS_BUCKET
from corral.contracts.subjects import SANDBOX_QUEUE as SANDBOX_QUEUE
from corral.contracts.subjects import SANDBOX_RPC_WILDCARD as SANDBOX_RPC_WILDCARD
from corral.contracts.subjects import SANDBOXES_BUCKET as SANDBOXES_BUCKET
from corral.contracts.subjects import TOOL_OUTPUTS_BUCKET as TOOL_OUTPUTS_BUCKET
from corral.contracts.subjects import TOOL_RESULTS_BUCKET as TOOL_RESULTS_BUCKET
from corral.contracts.subjects import execute_heartbeat as execute_heartbeat
from corral.contracts.subjects import sandbox_host_rpc as sandbox_host_rpc
from corral.contracts.subjects import sandbox_rpc as sandbox_rpc

# --- the rest of the contract ---------------------------------------------------------------------------

#: ``type`` of the built-in toolset in an agent's ``tools``.
TOOLSET_TYPE: Final = "agent_toolset_20260401"
#: The built-in tools, in the API's order; ``web_fetch``/``web_search`` need egress this deployment lacks.
BUILTIN_TOOLS: Final = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")

#: Tool timeout when neither the tool input nor the request gives one, and the most a caller may ask for.
DEFAULT_TOOL_TIMEOUT_MS: Final = 120_000
MAX_TOOL_TIMEOUT_MS: Final = 600_000
#: What a caller should add to the tool timeout when waiting for an ``execute`` reply (provisioning, records).
EXECUTE_REPLY_MARGIN_S: Final = 30.0
#: How often the manager serving an ``execute`` publishes its ``ExecuteHeartbeat``.
EXECUTE_HEARTBEAT_INTERVAL_S: Final = 1.0
#: ``error_code`` of an ``execute`` answered by a manager that is stopping: send it again once one is back.
MANAGER_STOPPING: Final = "sandbox_manager_stopping"


class SandboxOp:
    """Operation names; each is the last token of its request subject."""

    PROVISION = "provision"
    EXECUTE = "execute"
    CANCEL = "cancel"
    RELEASE = "release"


def tool_result_key(session_id: str, tool_use_id: str) -> str:
    """Key of one ``execute`` outcome in ``TOOL_RESULTS_BUCKET``."""
    return f"{session_id}.{tool_use_id}"


def execute_reply_timeout_s(timeout_ms: int | None) -> float:
    """How long a caller should wait for the reply to an ``execute`` with this ``timeout_ms``."""
    budget = timeout_ms if timeout_ms and timeout_ms > 0 else MAX_TOOL_TIMEOUT_MS
    return min(budget, MAX_TOOL_TIMEOUT_MS) / 1000 + EXECUTE_REPLY_MARGIN_S


# --- messages ------------------------------------------------------------------------------------------
class TextBlock(Message):
    type: Literal["text"] = "text"
    text: str


class Provision(Message):
    """Make sure the session has a sandbox (idempotent: an existing one is returned)."""

    session_id: str
    environment_id: str
    environment_config: dict[str, Any] = Field(default_factory=dict)
    #: The session's repositories, cloned into the sandbox when it is provisioned.
    repositories: list[RepositoryMount] = Field(default_factory=list)
    #: The session's workspace and vaults: their ``environment_variable`` credentials reach the sandbox
    #: as placeholders, substituted by its egress proxy (``corral.contracts.egress``).
    workspace_id: str | None = None
    vault_ids: list[str] = Field(default_factory=list)


class Provisioned(Message):
    container_id: str
    ready_ms: float
    from_pool: bool
    #: ``none``: loopback only; ``egress``: loopback plus the session's egress proxy (``corral.contracts.egress``).
    network: str
    #: What the environment asked for that this deployment could not honour (networking).
    notices: list[str] = Field(default_factory=list)
    #: Repositories that could not be cloned (each becomes a ``session.error``; the session goes on).
    repository_failures: list[RepositoryFailure] = Field(default_factory=list)


class Execute(Message):
    """Run one built-in tool call in the session's sandbox (provisioning it if needed)."""

    session_id: str
    tool_use_id: str
    name: str
    input: dict[str, Any]
    environment_id: str
    environment_config: dict[str, Any] = Field(default_factory=dict)
    #: The session's repositories, cloned into the sandbox when it is provisioned.
    repositories: list[RepositoryMount] = Field(default_factory=list)
    #: The session's workspace and vaults: their ``environment_variable`` credentials reach the sandbox
    #: as placeholders, substituted by its egress proxy (``corral.contracts.egress``).
    workspace_id: str | None = None
    vault_ids: list[str] = Field(default_factory=list)
    #: Overall timeout; ``bash`` prefers its own ``input.timeout_ms``. Capped at ``MAX_TOOL_TIMEOUT_MS``.
    timeout_ms: int | None = None


class ToolOutcome(Message):
    """The ``agent.tool_result`` payload, plus how it was produced."""

    content: list[TextBlock]
    is_error: bool
    #: ``False`` when the outcome was answered from the record of an earlier ``execute``.
    executed: bool
    duration_ms: float
    #: Repositories that could not be cloned when this call provisioned the sandbox (each becomes a
    #: ``session.error`` before the tool result; the session goes on without them).
    repository_failures: list[RepositoryFailure] = Field(default_factory=list)


class ExecuteHeartbeat(Message):
    """ "Still running this call": sent by the manager serving an ``execute`` until it replies."""

    session_id: str
    tool_use_id: str
    #: The manager instance serving the call (in logs: whose silence made a caller re-dispatch).
    instance: str


class Cancel(Message):
    """Stop a running ``execute`` (a ``user.interrupt``); its outcome becomes a cancelled error."""

    session_id: str
    tool_use_id: str


class Cancelled(Message):
    #: ``False`` when no such call was running here.
    cancelled: bool


class Release(Message):
    """Remove the session's sandbox (the session was archived, deleted or terminated)."""

    session_id: str
    reason: str


class Released(Message):
    #: The removed container, ``None`` when the session had none.
    container_id: str | None


class SandboxHost(Message):
    """A sandbox host's advertisement in ``SANDBOX_HOSTS_BUCKET`` (key: ``host``)."""

    host: str = Field(pattern=SANDBOX_HOST_ID_PATTERN)
    #: The manager process serving it (in logs).
    instance: str
    #: Its engine and sandbox image are there: it can start sandboxes now.
    ready: bool
    #: Sessions it holds a sandbox for.
    sessions: int
    #: Most sessions it takes (``CORRAL_SANDBOX_CAPACITY``); ``None``: no limit.
    capacity: int | None = None
    #: Warm (pre-started) sandboxes ready to be claimed, all configurations together.
    warm: int = 0
    #: The credential-proxy its sandboxes' egress goes through (``CORRAL_SANDBOX_EGRESS_HOST``, that
    #: proxy's ``CORRAL_CREDENTIAL_PROXY_HOST_ID``): what only it holds about a session placed here
    #: (``EgressOps.FAILURES``) is asked of it on ``on_egress_host``. ``None``: any credential-proxy
    #: (the queue group), as with one machine.
    egress_host: str | None = Field(default=None, pattern=SANDBOX_HOST_ID_PATTERN)
    #: When it was written (seconds since the epoch, the manager's clock).
    at: float


class SandboxPlacement(Message):
    """Which host holds a session's sandbox, in ``SANDBOX_PLACEMENTS_BUCKET`` (key: the session id)."""

    host: str = Field(pattern=SANDBOX_HOST_ID_PATTERN)
    #: The host it was on before, when it was moved because that host stopped answering.
    previous: str | None = None
    at: float


# --- operations ----------------------------------------------------------------------------------------
_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _sandbox(name: str, request: type[_Req], reply: type[_Rep], *, bounded: bool = True) -> Operation[_Req, _Rep]:
    return operation(
        name, sandbox_rpc(name), request, reply, queue=SANDBOX_QUEUE, service="sandbox-manager", bounded=bounded
    )


class SandboxOps:
    """Every ``corral.rpc.sandbox.<op>`` operation (queue group ``sandbox-manager``). Replies fit one
    message, but ``execute``'s: a tool's output is kept whole up to the manager's output limit
    (8 MiB by default), and a larger reply travels through the bodies object store."""

    PROVISION: Final = _sandbox(SandboxOp.PROVISION, Provision, Provisioned)
    EXECUTE: Final = _sandbox(SandboxOp.EXECUTE, Execute, ToolOutcome, bounded=False)
    CANCEL: Final = _sandbox(SandboxOp.CANCEL, Cancel, Cancelled)
    RELEASE: Final = _sandbox(SandboxOp.RELEASE, Release, Released)
    ALL: Final = (PROVISION, EXECUTE, CANCEL, RELEASE)


def host_queue(host: str) -> str:
    """The queue group of one host's own subjects (a host runs one manager; a second one shares)."""
    return f"{SANDBOX_QUEUE}.{host}"


@functools.cache
def on_host(op: Operation[_Req, _Rep], host: str) -> Operation[_Req, _Rep]:
    """``op`` as served by host ``host`` only (``sandbox_host_rpc(host, op.name)``)."""
    return dataclasses.replace(op, subject=sandbox_host_rpc(host, op.name), queue=host_queue(host))
