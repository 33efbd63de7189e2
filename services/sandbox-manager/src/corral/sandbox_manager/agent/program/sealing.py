"""Sealing: the agent becomes non-dumpable, so the tools cannot reach its descriptors."""

from __future__ import annotations

PR_SET_DUMPABLE = 4


def seal() -> bool:
    """Make this process (and the children it forks, until they exec) non-dumpable: its ``/proc/<pid>``
    entries become root's and ptrace is refused, so a tool cannot reach the agent's stdin, stdout and
    stderr through ``/proc/<pid>/fd``. Whether it took."""
    try:
        import ctypes  # optional in a minimal python3; without it nothing is sealed

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False
