"""One egress grant's interception authority: its CA, its placeholders, and the certificates it signs.

Built with ``cryptography`` (keys, certificates) and the standard ``ssl`` module (contexts); nothing
cryptographic is done by hand. The CA is made for one grant (a session, or a pooled sandbox's slot)
and only that sandbox is given its certificate: a CA key of one session signs nothing another
sandbox trusts. Its key stays in this process, and, with a state directory, in one 0600 file there
(``save`` / ``load``), never on the bus or in a log.

A **placeholder** is what the sandbox's environment holds in place of an ``environment_variable``
credential's value: ``corral-placeholder-`` and 32 hex digits of an HMAC, keyed by a random seed of
the grant, of the credential's id. It is unique per grant and credential, stable for the grant's
life (a restarted proxy computes the same ones from the saved seed), and says nothing about the
secret, which it is never derived from.

A **leaf** certificate is made per intercepted host (a DNS name or an IP address in its
subjectAltName), signed by the CA, and cached with its server ``SSLContext`` (HTTP/1.1 only, by
ALPN). ``ssl`` loads a certificate chain only from files: the leaf's key is written encrypted with a
random one-time password to a private temporary file, loaded, and the file removed at once.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PLACEHOLDER_PREFIX: Final = "corral-placeholder-"
#: How long the CA is valid: longer than any session lives; a leaf lives as long.
CA_VALIDITY: Final = datetime.timedelta(days=365)
#: Leaves and the CA start this far in the past, for a sandbox whose clock is a little behind.
_BACKDATE: Final = datetime.timedelta(hours=1)
_MAX_LEAVES: Final = 256
_STATE_MODE: Final = 0o600


class UnreadableState(Exception):
    """A saved authority cannot be read (damaged, or written by something else)."""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


@dataclass
class SessionAuthority:
    grant: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    certificate: x509.Certificate
    seed: bytes = field(repr=False)
    _leaves: dict[str, ssl.SSLContext] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, grant: str) -> SessionAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _name(f"Corral egress CA for {grant}")
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(grant=grant, key=key, certificate=certificate, seed=secrets.token_bytes(32))

    # --- what the sandbox is given ---------------------------------------------------------------------
    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def placeholder(self, credential_id: str) -> str:
        digest = hmac.new(self.seed, credential_id.encode(), hashlib.sha256).hexdigest()
        return f"{PLACEHOLDER_PREFIX}{digest[:32]}"

    # --- intercepting a host -----------------------------------------------------------------------------
    def leaf(self, host: str) -> x509.Certificate:
        """A certificate for ``host`` (a DNS name, or an IP address), signed by this CA, with a new key."""
        return self._leaf(host, ec.generate_private_key(ec.SECP256R1()))

    def _leaf(self, host: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        try:
            alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            alternative = x509.DNSName(host)
        now = datetime.datetime.now(datetime.UTC)
        public = key.public_key()
        ca_key_id = self.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(self.certificate.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(self.certificate.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def server_context(self, host: str) -> ssl.SSLContext:
        """The TLS server context that presents ``host``'s leaf (made once per host, then cached)."""
        context = self._leaves.get(host)
        if context is not None:
            return context
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self._leaf(host, key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        password = secrets.token_bytes(32)
        chain = certificate.public_bytes(serialization.Encoding.PEM) + self.certificate.public_bytes(
            serialization.Encoding.PEM
        )
        sealed = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password),
        )
        descriptor, path = tempfile.mkstemp(prefix="corral-leaf-", suffix=".pem")
        try:
            with os.fdopen(descriptor, "wb") as out:  # mkstemp: 0600, this process's user only
                out.write(chain + sealed)
            context.load_cert_chain(path, password=password)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if len(self._leaves) >= _MAX_LEAVES:
            self._leaves.pop(next(iter(self._leaves)))
        self._leaves[host] = context
        return context

    # --- persistence ---------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the CA key, certificate and seed to ``path`` (0600, replaced atomically)."""
        state = {
            "grant": self.grant,
            "key": self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode("ascii"),
            "certificate": self.certificate_pem,
            "seed": self.seed.hex(),
        }
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _STATE_MODE)
        try:
            with os.fdopen(descriptor, "w") as out:
                json.dump(state, out)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: Path) -> SessionAuthority:
        """The authority saved at ``path``.

        Raises:
            FileNotFoundError: nothing is saved there.
            UnreadableState: the file is not a saved authority.
        """
        text = path.read_text()
        try:
            state = json.loads(text)
            key = serialization.load_pem_private_key(state["key"].encode(), password=None)
            certificate = x509.load_pem_x509_certificate(state["certificate"].encode())
            seed = bytes.fromhex(state["seed"])
            grant = str(state["grant"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UnreadableState(f"{path} is not a saved egress authority ({type(exc).__name__})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or len(seed) != 32:
            raise UnreadableState(f"{path} is not a saved egress authority")
        return cls(grant=grant, key=key, certificate=certificate, seed=seed)
