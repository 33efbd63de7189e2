"""Host ids: the name a machine's sandbox-manager (``CORRAL_SANDBOX_HOST_ID``) and credential-proxy
(``CORRAL_CREDENTIAL_PROXY_HOST_ID``) go by on the bus. Unset, both take this machine's host name made
into one subject token, so the two processes of one machine agree without being told; where each runs
in its own container (compose, Kubernetes) they are given the same name (the node's)."""

from __future__ import annotations

import re
import socket
from typing import Final

#: What a host id looks like: one subject token (the same as ``corral.contracts.sandbox.SANDBOX_HOST_ID_PATTERN``).
HOST_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"


def machine_host_id() -> str:
    """This machine's name as a host id: ``.`` and other characters outside ``[A-Za-z0-9_-]`` become ``-``."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64].strip("-")
    return name or "localhost"


def host_id_or_machine(value: str) -> str:
    """``value`` when it is a host id, this machine's when it is empty.

    Raises:
        ValueError: ``value`` is not a host id (for a settings validator).
    """
    if not value:
        return machine_host_id()
    if not re.fullmatch(HOST_ID_PATTERN, value):
        raise ValueError(f"{value!r} is not a host id: use 1 to 64 letters, digits, '_' or '-'")
    return value
