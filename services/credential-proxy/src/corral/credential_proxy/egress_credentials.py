"""Credentials at egress: which of a grant's ``environment_variable`` credentials go to a host, and
the grant's interception authority (``session_ca``).

A grant whose policy names a ``workspace_id`` and ``vault_ids`` has credentials at egress. ``open``
asks ``environment`` for what the sandbox is given (each credential's ``secret_name`` and
placeholder, and the CA's PEM), the proxy asks ``injections`` per connection (the credentials bound
to the host, with their values: read through ``SessionCredentials``, which caches them briefly), and
``forget`` drops everything when the grant is closed. A connection to a bound host that fails is
noted (``note_unreachable``: the credentials' ids, no value) in ``failures`` until the harness takes
the grant's notes (``take_failures``; see ``host_failures``). Authorities are kept in memory, and in
``state_dir`` (one 0600 file per grant, in a 0700 directory) when it is set, so that a restarted
credential-proxy signs with the CA its running sandboxes already trust.

Several credentials with one ``secret_name``: the first in the session's vault order is the one the
sandbox's variable holds, as it is the first substituted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from corral.contracts.egress import SESSION_ID_PATTERN, CredentialHostFailure, EgressPolicy
from corral.credential_proxy.host_failures import HostFailures
from corral.credential_proxy.injection import Injection
from corral.credential_proxy.session_credentials import EnvironmentCredential

if TYPE_CHECKING:  # session_ca loads ``cryptography`` (~9 MiB): imported by the first authority needed
    from corral.credential_proxy.session_ca import SessionAuthority

logger = logging.getLogger(__name__)

_DIRECTORY_MODE: Final = 0o700


class CredentialSource(Protocol):
    """What ``SessionCredentials`` answers about a grant's ``environment_variable`` credentials."""

    async def environment_names(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...]
    ) -> list[tuple[str, str]]: ...

    async def environment_credentials(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[EnvironmentCredential]: ...

    async def environment_bound(
        self, workspace_id: str, session_id: str, vault_ids: tuple[str, ...], host: str
    ) -> list[tuple[str, str]]: ...

    def forget(self, session_id: str) -> None: ...


@dataclass(frozen=True)
class SandboxCredentials:
    """What the sandbox is given: ``secret_name`` -> placeholder, and the CA's PEM (none without credentials)."""

    environment: dict[str, str]
    ca_certificate: str | None


def has_credentials(policy: EgressPolicy) -> bool:
    return bool(policy.workspace_id and policy.vault_ids)


@dataclass
class EgressCredentials:
    source: CredentialSource
    state_dir: Path | None = None
    failures: HostFailures = field(default_factory=HostFailures)
    _authorities: dict[str, SessionAuthority] = field(default_factory=dict, repr=False)

    async def environment(self, grant: str, policy: EgressPolicy) -> SandboxCredentials:
        """The placeholders and CA for the sandbox of ``grant``.

        Raises:
            SecretStoreUnavailable, ApiError: the session's vaults cannot be read now.
        """
        if not has_credentials(policy):
            return SandboxCredentials({}, None)
        assert policy.workspace_id is not None
        names = await self.source.environment_names(policy.workspace_id, grant, tuple(policy.vault_ids))
        if not names:
            return SandboxCredentials({}, None)
        authority = self.authority(grant)
        environment: dict[str, str] = {}
        for credential_id, secret_name in names:
            environment.setdefault(secret_name, authority.placeholder(credential_id))
        return SandboxCredentials(environment, authority.certificate_pem)

    async def injections(self, grant: str, policy: EgressPolicy, host: str) -> list[Injection]:
        """The credentials of ``grant`` bound to ``host``, with their placeholders and values.

        Raises:
            SecretStoreUnavailable, ApiError: the session's vaults or secrets cannot be read now.
        """
        if not has_credentials(policy):
            return []
        assert policy.workspace_id is not None
        bound = await self.source.environment_credentials(policy.workspace_id, grant, tuple(policy.vault_ids), host)
        if not bound:
            return []
        authority = self.authority(grant)
        return [
            Injection(
                credential_id=c.credential_id,
                placeholder=authority.placeholder(c.credential_id),
                value=c.value,
                header=c.header,
                body=c.body,
            )
            for c in bound
        ]

    async def note_unreachable(self, grant: str, policy: EgressPolicy, host: str, port: int, reason: str) -> None:
        """Note, for the harness, the grant's credentials bound to ``host`` (which could not be reached).

        Raises:
            SecretStoreUnavailable, ApiError: the session's vaults cannot be read now.
        """
        if not has_credentials(policy):
            return
        assert policy.workspace_id is not None
        bound = await self.source.environment_bound(policy.workspace_id, grant, tuple(policy.vault_ids), host)
        self.failures.note(grant, bound, host, port, reason)

    def take_failures(self, grant: str) -> list[CredentialHostFailure]:
        """The grant's credential hosts not reached since the last take (then forgotten)."""
        return self.failures.take(grant)

    def authority(self, grant: str) -> SessionAuthority:
        """The grant's authority: in memory, else saved in ``state_dir``, else made (and saved) now."""
        found = self._authorities.get(grant)
        if found is not None:
            return found
        from corral.credential_proxy.session_ca import SessionAuthority, UnreadableState

        path = self._path(grant)
        if path is not None:
            try:
                found = SessionAuthority.load(path)
            except FileNotFoundError:
                pass
            except (UnreadableState, OSError) as exc:
                logger.warning(
                    "egress authority not readable; making a new one",
                    extra={"fields": {"grant": grant, "error": str(exc)}},
                )
        if found is None:
            found = SessionAuthority.create(grant)
            if path is not None:
                try:
                    _private_directory(path.parent)
                    found.save(path)
                except OSError as exc:
                    logger.warning(
                        "egress authority not saved: a restart will make a new one",
                        extra={"fields": {"grant": grant, "error": str(exc)}},
                    )
        self._authorities[grant] = found
        return found

    def forget(self, grant: str) -> None:
        """Drop the grant's authority (and its saved file) and cached credentials."""
        self._authorities.pop(grant, None)
        self.failures.forget(grant)
        self.source.forget(grant)
        path = self._path(grant)
        if path is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("egress authority not removed", extra={"fields": {"grant": grant, "error": str(exc)}})

    def _path(self, grant: str) -> Path | None:
        if self.state_dir is None or re.fullmatch(SESSION_ID_PATTERN, grant) is None:
            return None
        return self.state_dir / f"{grant}.json"


def _private_directory(directory: Path) -> None:
    directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
    directory.chmod(_DIRECTORY_MODE)
