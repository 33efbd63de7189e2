"""Host ids: the name a machine's sandbox-manager (``CORRAL_SANDBOX_HOST_ID``) and credential-proxy
(``CORRAL_CREDENTIAL_PROXY_HOST_ID``) go by on the bus, one subject token. Unset, both take this
machine's host name; set, they take the value given. Either way the name is made a token by the same
rule (``host_id_of``), so the two processes of one machine agree whether they are told nothing (one
machine, plain processes) or both told the same name (Kubernetes: the node's, ``spec.nodeName``, whose
dots become dashes)."""

from __future__ import annotations

import hashlib
import re
import socket
from typing import Final

#: What a host id looks like: one subject token (the same as ``corral.contracts.sandbox.SANDBOX_HOST_ID_PATTERN``).
HOST_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
_LONGEST: Final = 64


def host_id_of(name: str) -> str:
    """``name`` as a host id: each character outside ``[A-Za-z0-9_-]`` becomes ``-`` (leading and
    trailing ones dropped); a name longer than 64 keeps its first 55 characters and ``-`` and 8 hex
    digits of its SHA-256, so two long names differing only at the end stay two ids.

    Raises:
        ValueError: nothing of ``name`` is left (for a settings validator).
    """
    token = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-")
    if len(token) > _LONGEST:
        token = f"{token[: _LONGEST - 9]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    if not token:
        raise ValueError(f"{name!r} is not a host id: use letters, digits, '_' or '-' (other characters become '-')")
    return token


def machine_host_id() -> str:
    """This machine's host name as a host id (``localhost`` when it has none)."""
    try:
        return host_id_of(socket.gethostname())
    except ValueError:
        return "localhost"


def host_id_or_machine(value: str) -> str:
    """``value`` as a host id (``host_id_of``), this machine's when it is empty.

    Raises:
        ValueError: nothing of ``value`` is left.
    """
    return host_id_of(value) if value else machine_host_id()
