"""Session repositories (``resources`` of type ``github_repository``): what crosses the bus about them.

A repository's ``authorization_token`` is a secret. The gateway takes it out of the API request and
sends it in a ``register`` request (core NATS request-reply, never a stream: ``RegisterRepository``
is small enough that it never travels through the bodies object store) straight to the
credential-proxy, which keeps it in OpenBao under the resource's id. Everything else on the bus
(the session log, the catalog, Postgres, the sandbox-manager's and the harness's messages) carries
only the resource's metadata: ``RepositoryMount`` (id, url, mount path, checkout).

The sandbox never holds the token. Its clone's remote is ``remote_url(resource_id)``,
``http://git.corral.invalid/<resource_id>``, which its git reaches through the session's egress proxy
(``http.proxy`` is set in the clone's config): the credential-proxy recognises ``GIT_PROXY_HOST`` on
a session's socket, checks that the resource is one the socket's grant lists (``EgressPolicy.
repositories``), and forwards the git smart-HTTP request to the repository's url with the token read
from OpenBao at that moment, so a rotated token (``register`` again) is used from the next request.
The resource id in the URL is a capability only on that session's socket: the same URL sent through
another sandbox's proxy is refused.

Every reply is a ``corral.contracts.rpc.RpcReply``. ``register`` answers ``invalid_request_error``
naming the field when the url is malformed or its host is not one the credential-proxy may reach
for repositories (``CORRAL_CREDENTIAL_PROXY_GIT_HOSTS``), and ``api_error`` with ``error_code:
vault_unavailable`` when OpenBao cannot take the token.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from corral.contracts.operation import Operation, operation
from corral.contracts.rpc import Message
from corral.contracts.subjects import REPOSITORIES_QUEUE as REPOSITORIES_QUEUE
from corral.contracts.subjects import repositories_rpc as repositories_rpc

#: The host name of every repository remote inside a sandbox. ``.invalid`` never resolves, so a
#: remote copied out of the sandbox leads nowhere; only a session's egress proxy answers it.
GIT_PROXY_HOST: Final = "git.corral.invalid"
#: Longest ``authorization_token`` accepted (GitHub's tokens are well under 300 characters).
MAX_TOKEN_CHARS: Final = 4096
#: Longest repository url accepted.
MAX_URL_CHARS: Final = 2048
#: Where a repository is mounted when the request names no ``mount_path``: ``/workspace/<repo-name>``.
DEFAULT_MOUNT_ROOT: Final = "/workspace"
RESOURCE_ID_PATTERN: Final = r"^sesrsc_[A-Za-z0-9]{1,64}$"

RepositoryErrorType = Literal[
    "repository_authentication_error",
    "repository_forbidden_error",
    "repository_not_found_error",
    "repository_checkout_error",
    "repository_clone_error",
]

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def remote_url(resource_id: str) -> str:
    """The remote a sandbox's clone points at: its egress proxy, with the resource id as capability."""
    return f"http://{GIT_PROXY_HOST}/{resource_id}"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a repository url Corral accepts (``https://host[:port]/path``), or ``None``."""
    if len(url) > MAX_URL_CHARS:
        return f"the url is longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a url ({exc})"
    del port
    if parts.scheme not in ("https", "http"):
        return f"{url!r} is not an https:// url of a git repository (e.g. https://github.com/owner/repo)"
    if not parts.hostname:
        return f"{url!r} names no host"
    if parts.username is not None or parts.password is not None:
        return "the url must not carry credentials; give the token as authorization_token"
    if parts.query or parts.fragment:
        return f"{url!r} must not have a query or fragment"
    if parts.path.strip("/") == "":
        return f"{url!r} names no repository (e.g. https://github.com/owner/repo)"
    if any(c.isspace() for c in url) or any(ord(c) < 0x20 for c in url):
        return "the url must not contain whitespace or control characters"
    return None


def repository_name(url: str) -> str:
    """``repo`` for ``https://github.com/owner/repo(.git)``: the default mount path's last part."""
    last = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return last if last not in ("", ".", "..") and _NAME.fullmatch(last) else "repository"


def default_mount_path(url: str) -> str:
    return f"{DEFAULT_MOUNT_ROOT}/{repository_name(url)}"


def mount_path_problem(path: str) -> str | None:
    """Why ``path`` cannot hold a repository in the sandbox (it must lie under /workspace), or ``None``."""
    parts = path.rstrip("/").split("/")
    if not path.startswith(f"{DEFAULT_MOUNT_ROOT}/") or len(parts) < 3:
        return f"mount_path {path!r} must be a directory under {DEFAULT_MOUNT_ROOT}/ (e.g. /workspace/repo)"
    if any(p in ("", ".", "..") or not _NAME.fullmatch(p) for p in parts[1:]):
        return f"mount_path {path!r} may hold only letters, digits, '.', '_' and '-' in its parts, no '..'"
    return None


# --- messages ------------------------------------------------------------------------------------------
class RepositoryCheckout(Message):
    """``{type: branch, name}`` or ``{type: commit, sha}``, as the API has it."""

    type: Literal["branch", "commit"]
    name: str | None = None
    sha: str | None = None


class RepositoryAccess(Message):
    """A repository a session's socket may reach through ``GIT_PROXY_HOST`` (part of its egress grant)."""

    resource_id: str = Field(pattern=RESOURCE_ID_PATTERN)
    url: str


class RepositoryMount(Message):
    """A repository the sandbox-manager clones into a session's sandbox when it provisions it."""

    resource_id: str = Field(pattern=RESOURCE_ID_PATTERN)
    url: str
    mount_path: str
    checkout: RepositoryCheckout | None = None


class RegisterRepository(Message):
    """Keep (or replace: a rotation) a repository's token; check its url may be reached."""

    resource_id: str = Field(pattern=RESOURCE_ID_PATTERN)
    url: str
    authorization_token: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS, repr=False)


class RepositoryRegistered(Message):
    resource_id: str
    has_token: bool


class ForgetRepositories(Message):
    """Delete the tokens of these resources (their session was deleted)."""

    resource_ids: list[str] = Field(max_length=1000)


class RepositoriesForgotten(Message):
    forgotten: int


class CheckRepository(Message):
    """Ask the repository's host, with its token, whether it can be cloned as ``checkout`` says."""

    resource_id: str = Field(pattern=RESOURCE_ID_PATTERN)
    url: str
    checkout: RepositoryCheckout | None = None


class RepositoryProblem(Message):
    """Why a repository cannot be cloned: the ``session.error`` the session gets (``repository_url``)."""

    type: RepositoryErrorType
    message: str


class RepositoryFailure(Message):
    """A repository that could not be cloned into a sandbox: a ``session.error`` of ``type``."""

    resource_id: str
    url: str
    type: RepositoryErrorType
    message: str


class RepositoryChecked(Message):
    problem: RepositoryProblem | None = None


# --- operations ----------------------------------------------------------------------------------------
_Req = TypeVar("_Req", bound=BaseModel)
_Rep = TypeVar("_Rep")


def _repositories(name: str, request: type[_Req], reply: type[_Rep], *, secret: bool = False) -> Operation[_Req, _Rep]:
    return operation(
        name,
        repositories_rpc(name),
        request,
        reply,
        queue=REPOSITORIES_QUEUE,
        service="credential-proxy",
        bounded=True,
        secret=secret,
    )


class RepositoryOps:
    """Every ``corral.rpc.repositories.<op>`` operation (queue group ``credential-proxy``)."""

    #: ``secret``: the request carries the token, so it is one bus message or nothing (never the bodies store).
    REGISTER: Final = _repositories("register", RegisterRepository, RepositoryRegistered, secret=True)
    FORGET: Final = _repositories("forget", ForgetRepositories, RepositoriesForgotten)
    CHECK: Final = _repositories("check", CheckRepository, RepositoryChecked)
