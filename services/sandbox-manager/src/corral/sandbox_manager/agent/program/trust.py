"""The sandbox's trust bundle: the image's system CAs plus the session's egress CA.

TLS clients in the sandbox are pointed at the bundle (``SSL_CERT_FILE`` and friends), so they trust
the CA the session's egress proxy signs intercepted hosts' certificates with, and every CA the image
trusts for the hosts the proxy only tunnels. The bundle is written once, at start, before any tool runs.
"""

from __future__ import annotations

import os

#: Where Debian-like images keep their system bundle (``ca-certificates``); others may have none.
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def write_bundle(path: str, ca_pem: str) -> None:
    """Write the system bundle (if the image has one) followed by ``ca_pem`` to ``path`` (0644)."""
    system = b""
    for candidate in SYSTEM_BUNDLES:
        try:
            with open(candidate, "rb") as found:
                system = found.read()
            break
        except OSError:
            continue
    if system and not system.endswith(b"\n"):
        system += b"\n"
    os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "wb") as out:
        out.write(system + ca_pem.encode("ascii"))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
