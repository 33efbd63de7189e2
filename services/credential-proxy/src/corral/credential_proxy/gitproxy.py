"""The git smart-HTTP proxy: a session's repositories, reached from its sandbox without their tokens.

Inside the sandbox a repository's remote is ``http://git.corral.invalid/<resource_id>``
(``corral.contracts.repositories.remote_url``) and git sends it through the session's egress proxy
(the clone's ``http.proxy``). The egress proxy hands every plain-HTTP request for ``GIT_PROXY_HOST``
to ``GitProxy.carry``, which:

1. accepts only the smart-HTTP endpoints: ``GET /<resource_id>/info/refs?service=git-upload-pack``
   (or ``git-receive-pack``), ``POST /<resource_id>/git-upload-pack`` and ``.../git-receive-pack``
   (else ``404``): the token can be used for git and nothing else on its host;
2. requires the resource to be one of the socket's grant (``EgressPolicy.repositories``), so the
   URL is a capability only inside that session's sandbox (else ``403``);
3. reads the resource's url and token from OpenBao now (a rotated token counts from the next request;
   OpenBao unavailable: ``503``), and refuses when the registered url is not the grant's (``403``);
4. connects to the repository's host on vetted addresses (``CORRAL_CREDENTIAL_PROXY_GIT_HOSTS`` and
   the egress address rules; ``403``/``502``), and forwards the request to ``<url><endpoint>`` with
   the sandbox's own ``Authorization``, ``Cookie`` and hop-by-hop headers dropped and the token added
   as ``Authorization: Basic`` (``x-access-token:<token>``); the response streams back as is.

Nothing of the request's headers or body is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from typing import Final

from corral.contracts.api.errors import ApiError
from corral.contracts.egress import EgressPolicy
from corral.contracts.repositories import GIT_PROXY_HOST
from corral.credential_proxy.destinations import Refused, Unreachable
from corral.credential_proxy.http_head import BadRequest, RequestHead, answer, forward_request
from corral.credential_proxy.repositories import Repositories, VaultUnavailable, authorization
from corral.credential_proxy.splice import Activity, Idle, copy_body, pump

logger = logging.getLogger(__name__)

_ENDPOINT: Final = re.compile(
    r"^/(?P<resource>sesrsc_[A-Za-z0-9]{1,64})(?P<endpoint>/info/refs|/git-upload-pack|/git-receive-pack)$"
)
_SERVICES: Final = frozenset({"service=git-upload-pack", "service=git-receive-pack"})
#: Never sent upstream: hop-by-hop headers, the sandbox's own credentials, and ``Host`` (rewritten).
_DROPPED: Final = frozenset({"connection", "keep-alive", "te", "trailer", "upgrade", "host", "authorization", "cookie"})


def is_git_request(head: RequestHead) -> bool:
    """Whether a plain-HTTP proxy request is addressed to ``GIT_PROXY_HOST``."""
    scheme, sep, rest = head.target.partition("://")
    if not sep or scheme.lower() != "http":
        return False
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0].lower()
    return authority in (GIT_PROXY_HOST, f"{GIT_PROXY_HOST}:80")


class GitProxy:
    def __init__(self, repositories: Repositories, *, idle_timeout_s: float) -> None:
        self._repositories = repositories
        self._idle_timeout_s = idle_timeout_s

    async def carry(
        self,
        session_id: str,
        policy: EgressPolicy,
        head: RequestHead,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Answer one git request of the session (whose socket the request arrived on)."""
        resource_id: str | None = None
        try:
            forward = forward_request(head)  # checks the body's framing
            path, _, query = head.target.partition("://")[2].partition("/")[2].partition("#")[0].partition("?")
            match = _ENDPOINT.fullmatch("/" + path)
            if (
                match is None
                or (match["endpoint"] == "/info/refs") != (query in _SERVICES)
                or (match["endpoint"] != "/info/refs" and query)
            ):
                await _refuse(writer, 404, "not a git smart-HTTP endpoint of a session repository", session_id, None)
                return
            if (match["endpoint"] == "/info/refs") != (head.method == "GET"):
                await _refuse(
                    writer, 400, f"{head.method} is not how git asks for {match['endpoint']}", session_id, None
                )
                return
            resource_id = match["resource"]
            access = next((r for r in policy.repositories if r.resource_id == resource_id), None)
            if access is None:
                await _refuse(
                    writer, 403, f"{resource_id} is not a repository of this session", session_id, resource_id
                )
                return
            stored = await self._repositories.stored(resource_id)
            if stored is None or stored.url != access.url:
                await _refuse(
                    writer,
                    403,
                    f"no credentials are registered for {access.url}; update the resource's authorization_token",
                    session_id,
                    resource_id,
                )
                return
            upstream = self._repositories.upstream(access.url)
            up_reader, up_writer = await self._repositories.open(upstream)
        except BadRequest as exc:
            await _refuse(writer, 400, str(exc), session_id, resource_id)
            return
        except ApiError as exc:
            await _refuse(writer, 403, exc.message, session_id, resource_id)
            return
        except Refused as exc:
            await _refuse(writer, 403, str(exc), session_id, resource_id)
            return
        except Unreachable as exc:
            await _refuse(writer, 502, str(exc), session_id, resource_id)
            return
        except VaultUnavailable as exc:
            await _refuse(writer, 503, str(exc), session_id, resource_id)
            return
        except (OSError, ssl.SSLError) as exc:
            await _refuse(
                writer, 502, f"cannot reach the repository's host ({type(exc).__name__})", session_id, resource_id
            )
            return
        target = upstream.path + match["endpoint"] + (f"?{query}" if query else "")
        lines = [f"{head.method} {target} HTTP/1.1", f"Host: {upstream.authority}"]
        named = {t.strip().lower() for v in head.values("connection") for t in v.split(",")}
        for name, value in head.headers:
            low = name.lower()
            if low in _DROPPED or low.startswith("proxy-") or low in named:
                continue
            lines.append(f"{name}: {value}")
        lines += [f"{k}: {v}" for k, v in authorization(stored.token)]
        lines.append("Connection: close")
        logger.info(
            "git request",
            extra={
                "fields": {
                    "session_id": session_id,
                    "resource_id": resource_id,
                    "endpoint": match["endpoint"],
                    "host": upstream.authority,
                }
            },
        )
        activity = Activity(self._idle_timeout_s)
        try:
            up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            async with asyncio.TaskGroup() as both:
                body = both.create_task(copy_body(forward.body, reader, up_writer, activity))
                await pump(up_reader, writer, activity)
                body.cancel()
        except* Idle:
            logger.debug("git request idle", extra={"fields": {"session_id": session_id}})
        except* (OSError, EOFError, asyncio.LimitOverrunError, BadRequest, ssl.SSLError):
            pass
        finally:
            up_writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await up_writer.wait_closed()


async def _refuse(
    writer: asyncio.StreamWriter, status: int, text: str, session_id: str, resource_id: str | None
) -> None:
    logger.info(
        "git request refused",
        extra={"fields": {"session_id": session_id, "resource_id": resource_id, "status": status, "reason": text}},
    )
    writer.write(answer(status, f"corral git proxy: {text}"))
    with contextlib.suppress(OSError):
        await writer.drain()
