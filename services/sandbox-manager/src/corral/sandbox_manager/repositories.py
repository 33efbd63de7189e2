"""A session's repositories, cloned into its sandbox when it is provisioned, with no token inside.

For each ``RepositoryMount`` the sandbox-manager first asks the credential-proxy to ``check`` it (the
host answers for its refs with the token, which the credential-proxy holds): a refused token, a
missing repository or branch becomes the API's ``repository_*_error`` without cloning. Then the
sandbox's own git clones ``http://git.corral.invalid/<resource_id>`` through the session's egress
proxy (``-c http.proxy=http://127.0.0.1:3128``, kept in the clone's ``.git/config``): the
credential-proxy adds the token on the way upstream, so it is never in the container, its
environment, its files or a command line. The clone runs as the sandbox's user in a subshell of the
agent's shell (its working directory and variables are untouched). A mount path that already holds a
clone is left as it is.

A repository that cannot be cloned is a ``RepositoryFailure``: the session goes on without it
(the harness appends a ``session.error`` with ``retry_status: retrying``).
"""

from __future__ import annotations

import logging
import shlex
from typing import Final, Protocol

from corral.bus import Bus, BusError, NoResponders
from corral.contracts.api.errors import ApiError
from corral.contracts.egress import SANDBOX_PROXY_PORT, EgressPolicy
from corral.contracts.repositories import (
    CheckRepository,
    RepositoryAccess,
    RepositoryFailure,
    RepositoryMount,
    RepositoryOps,
    RepositoryProblem,
    remote_url,
)
from corral.sandbox_manager.channel import SandboxLost
from corral.sandbox_manager.sandboxes import Sandbox

logger = logging.getLogger(__name__)

_CHECK_TIMEOUT_S: Final = 60.0
#: Exit code of the clone script when the commit to check out is not in the repository.
_NO_SUCH_COMMIT: Final = 3
_OUTPUT_TAIL: Final = 600


class RepositoryChecks(Protocol):
    async def check(self, mount: RepositoryMount) -> RepositoryProblem | None: ...


class BusRepositoryChecks:
    """``RepositoryChecks`` over ``RepositoryOps.CHECK`` (the credential-proxy)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def check(self, mount: RepositoryMount) -> RepositoryProblem | None:
        request = CheckRepository(resource_id=mount.resource_id, url=mount.url, checkout=mount.checkout)
        try:
            checked = await self._bus.call(RepositoryOps.CHECK, request, timeout=_CHECK_TIMEOUT_S)
        except NoResponders:
            why = "no credential-proxy is running"
        except TimeoutError:
            why = f"the credential-proxy did not answer within {_CHECK_TIMEOUT_S:g} s"
        except ApiError as exc:
            why = exc.message
        except BusError as exc:
            why = f"the credential-proxy's reply was unreadable ({exc})"
        else:
            return checked.problem
        return RepositoryProblem(type="repository_clone_error", message=f"the repository could not be cloned: {why}")


def with_repositories(policy: EgressPolicy | None, mounts: list[RepositoryMount]) -> EgressPolicy | None:
    """The session's egress policy, also granting its repositories (a sandbox with repositories always
    gets its egress proxy, which carries the git proxy, even when its environment allows no network)."""
    if not mounts:
        return policy
    access = [RepositoryAccess(resource_id=m.resource_id, url=m.url) for m in mounts]
    if policy is None:
        return EgressPolicy(allowed_hosts=[], allow_package_managers=False, repositories=access)
    return policy.model_copy(update={"repositories": access})


def clone_script(mount: RepositoryMount) -> str:
    """The shell commands that clone ``mount`` through the proxy (no secret in them)."""
    proxy = f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"
    path = shlex.quote(mount.mount_path)
    branch = ""
    if mount.checkout is not None and mount.checkout.type == "branch" and mount.checkout.name:
        branch = f"--branch {shlex.quote(mount.checkout.name)} "
    lines = [
        "set -e",
        "export GIT_TERMINAL_PROMPT=0",
        f"if [ -e {path}/.git ]; then exit 0; fi",
        f'mkdir -p "$(dirname {path})"',
        f"git -c http.proxy={proxy} clone --quiet {branch}-- {shlex.quote(remote_url(mount.resource_id))} {path}",
        f"cd {path}",
        f"git config http.proxy {proxy}",
    ]
    if mount.checkout is not None and mount.checkout.type == "commit" and mount.checkout.sha:
        sha = shlex.quote(mount.checkout.sha)
        lines.append(f"git -c advice.detachedHead=false checkout --quiet {sha} -- 2>&1 || exit {_NO_SUCH_COMMIT}")
    return "( " + "\n".join(lines) + "\n) 2>&1"


async def clone_all(
    sandbox: Sandbox, mounts: list[RepositoryMount], checks: RepositoryChecks, *, timeout_s: float
) -> list[RepositoryFailure]:
    """Clone each repository into ``sandbox``; the ones that could not be cloned."""
    failures: list[RepositoryFailure] = []
    for mount in mounts:
        fields = {"session_id": sandbox.session_id, "resource_id": mount.resource_id, "mount_path": mount.mount_path}
        problem = await checks.check(mount)
        if problem is None:
            problem = await _clone(sandbox, mount, timeout_s=timeout_s)
        if problem is None:
            logger.info("repository cloned", extra={"fields": fields})
            continue
        logger.info("repository not cloned", extra={"fields": {**fields, "error": problem.type}})
        failures.append(
            RepositoryFailure(resource_id=mount.resource_id, url=mount.url, type=problem.type, message=problem.message)
        )
    return failures


async def _clone(sandbox: Sandbox, mount: RepositoryMount, *, timeout_s: float) -> RepositoryProblem | None:
    try:
        reply = await sandbox.channel.call(
            "bash",
            {"command": clone_script(mount)},
            timeout_ms=int(timeout_s * 1000),
            wait_s=timeout_s + 10,
        )
    except (SandboxLost, TimeoutError) as exc:
        return RepositoryProblem(
            type="repository_clone_error", message=f"the sandbox stopped while cloning ({type(exc).__name__})"
        )
    if not reply.is_error:
        return None
    output = reply.text.strip()[-_OUTPUT_TAIL:]
    if f"[exit code {_NO_SUCH_COMMIT}]" in reply.text and mount.checkout is not None:
        return RepositoryProblem(
            type="repository_checkout_error",
            message=f"commit {mount.checkout.sha} could not be checked out in {mount.url}: {output}",
        )
    return RepositoryProblem(type="repository_clone_error", message=f"git clone of {mount.url} failed: {output}")
