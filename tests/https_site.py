"""HTTPS (and plain HTTP) servers on loopback that record every request they receive, for the
credentials-at-egress tests.

``TestAuthority`` is a CA of the test's own (made with ``cryptography``, independently of the code
under test) that signs server certificates for an IP address or host name; its PEM file is what a
test stack's credential-proxy is given as ``CORRAL_CREDENTIAL_PROXY_EGRESS_UPSTREAM_CA_FILE``.
``serving_recorder(address, authority=...)`` serves HTTPS with such a certificate (HTTP without
one) and records each request's method, path, headers and body in ``site.requests``.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class TestAuthority:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    __test__ = False

    @classmethod
    def create(cls) -> TestAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Corral tests upstream CA")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def server_files(self, host: str, directory: Path) -> tuple[Path, Path]:
        """A certificate for ``host`` signed by this CA, and its key: two PEM files in ``directory``."""
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alternative = x509.DNSName(host)
        now = datetime.datetime.now(datetime.UTC)
        ca_key_id = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path, key_path = directory / f"{host}.crt", directory / f"{host}.key"
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path

    def server_context(self, host: str, directory: Path) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self.server_files(host, directory))
        return context


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    address: str
    port: int
    scheme: str
    requests: list[Recorded] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.address}:{self.port}{path}"

    def everything(self) -> str:
        """All that was received, as one text (for canary searches)."""
        return "\n".join(
            f"{r.method} {r.path}\n"
            + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            + "\n"
            + r.body.decode("utf-8", "replace")
            for r in self.requests
        )


@contextlib.contextmanager
def serving_recorder(
    address: str, *, authority: TestAuthority | None = None, directory: Path | None = None
) -> Iterator[Recorder]:
    """A server on ``address`` (any free port) answering ``200 recorded`` to every request."""
    site = Recorder(address=address, port=0, scheme="https" if authority is not None else "http")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            site.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
            answer = b"recorded\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_PUT = _record

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    if authority is not None:
        assert directory is not None, "an HTTPS recorder needs a directory for its certificate"
        context = authority.server_context(address, directory)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
