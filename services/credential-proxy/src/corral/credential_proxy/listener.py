"""One session's unix socket, ``<socket_dir>/<session_id>/proxy.sock``, and its accept loop.

``Listener`` owns the connections it accepts in a task group (each carried by the session's
``SessionProxy``): cancelling ``serve`` closes them all.

The socket is the session's identity: every connection accepted on it is that session's, whatever
it sends. Its directory (0755) holds nothing else, and the sandbox-manager mounts the directory,
not the socket, into the sandbox: a restarted credential-proxy binds a new socket in the same
directory and running sandboxes reach it. The socket is 0666 because the sandbox's user (uid 1000)
is not this process's; only the sandboxes it is mounted into can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Final

from corral.contracts.egress import EGRESS_SOCKET_NAME
from corral.credential_proxy.proxy import SessionProxy

logger = logging.getLogger("corral.credential_proxy.proxy")

#: Pause after a failed accept (out of file descriptors) before accepting again.
_ACCEPT_BACKOFF_S: Final = 0.2
#: Longest path a unix socket is bound to (``sun_path`` is 108 bytes on Linux, with a final NUL).
MAX_SOCKET_PATH: Final = 107
_DIRECTORY_MODE: Final = 0o755
#: Any uid may connect: the sandbox's user is not the credential-proxy's.
_SOCKET_MODE: Final = 0o666


class CannotListen(Exception):
    """The session's directory or socket cannot be made."""


class Listener:
    """A session's unix socket, ``<directory>/proxy.sock``. Build it with ``bind``; run ``serve`` in a
    task; cancel it to stop (the socket file goes, the directory stays for the next start); ``remove``
    when the session is closed also deletes the directory."""

    def __init__(self, proxy: SessionProxy, sock: socket.socket, directory: Path) -> None:
        self.proxy = proxy
        self.directory = directory
        self.path = directory / EGRESS_SOCKET_NAME
        self._sock = sock
        self._inode = _inode(os.lstat(self.path))

    @classmethod
    def bind(cls, proxy: SessionProxy, directory: Path) -> Listener:
        """Listen on ``<directory>/proxy.sock``: the directory is made (0755) if missing, a socket file
        left there by an earlier run is replaced, and the new socket is made connectable by any uid.

        Raises:
            CannotListen: the path is too long for a unix socket, or the directory or socket cannot be made.
        """
        path = directory / EGRESS_SOCKET_NAME
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise CannotListen(
                f"cannot listen on {path}: a unix socket's path is at most {MAX_SOCKET_PATH} bytes; "
                "set CORRAL_CREDENTIAL_PROXY_EGRESS_SOCKET_DIR to a shorter directory"
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound = False
        try:
            _make_directory(directory)
            _remove_stale(path)
            sock.bind(os.fspath(path))
            bound = True
            os.chmod(path, _SOCKET_MODE)
            sock.listen(128)
            sock.setblocking(False)
            return cls(proxy, sock, directory)
        except OSError as exc:
            sock.close()
            if bound:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise CannotListen(f"cannot listen on {path}: {exc.strerror or exc}") from None

    def in_place(self) -> bool:
        """Whether the socket file is still this listener's (nothing removed or replaced it)."""
        try:
            return _inode(os.lstat(self.path)) == self._inode
        except OSError:
            return False

    def close(self) -> None:
        """Stop listening and remove the socket file (if it is still this listener's)."""
        self._sock.close()
        try:
            if _inode(os.lstat(self.path)) == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning(
                "egress socket not removed",
                extra={"fields": {"session_id": self.proxy.session_id, "error": str(exc)}},
            )

    def remove(self) -> None:
        """Close, and delete the session's directory."""
        self.close()
        remove_directory(self.directory, session_id=self.proxy.session_id)

    async def serve(self) -> None:
        """Accept and carry connections until cancelled; then every connection is closed."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as connections:
                while True:
                    try:
                        conn, _ = await loop.sock_accept(self._sock)
                    except OSError as exc:
                        logger.warning(
                            "egress accept failed",
                            extra={"fields": {"session_id": self.proxy.session_id, "error": str(exc)}},
                        )
                        await asyncio.sleep(_ACCEPT_BACKOFF_S)
                        continue
                    carry = self.proxy.admit(conn)
                    if carry is not None:
                        connections.create_task(carry)
        finally:
            self.close()


def remove_directory(directory: Path, *, session_id: str) -> None:
    """Delete a session's directory and the socket file in it, if they exist (nothing else is removed)."""
    try:
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISDIR(os.lstat(directory / EGRESS_SOCKET_NAME).st_mode):
                os.unlink(directory / EGRESS_SOCKET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)
    except OSError as exc:
        logger.warning(
            "egress directory not removed",
            extra={"fields": {"session_id": session_id, "directory": str(directory), "error": str(exc)}},
        )


def _make_directory(directory: Path) -> None:
    """The session's directory, 0755 whatever the umask; an existing one must be a directory (no link)."""
    try:
        os.mkdir(directory, _DIRECTORY_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            raise NotADirectoryError(errno.ENOTDIR, f"{directory} exists and is not a directory") from None
    os.chmod(directory, _DIRECTORY_MODE)


def _remove_stale(path: Path) -> None:
    """Unlink what an earlier run left at the socket's path (its socket, when it was not stopped cleanly)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory")
    os.unlink(path)


def _inode(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino
