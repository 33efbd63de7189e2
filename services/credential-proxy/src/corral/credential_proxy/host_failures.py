"""Notes of the credential hosts each session's sandbox could not reach, until the harness takes them.

The egress proxy notes an ``environment_variable`` credential when a connection to a host it is bound
to fails (refused, unresolvable, unreachable, or its TLS not verifiable); the harness takes a
session's notes (``corral.rpc.egress.failures``) after each tool call that ran in the sandbox and
logs one ``credential_host_unreachable_error`` per credential: only the harness writes the log.

Kept in memory and bounded: per session one note per credential until taken (later failures of the
same credential count in its ``attempts``; the first host and reason are kept), at most
``max_per_session`` credentials (more are dropped), at most ``max_sessions`` sessions (the one noted
least recently dropped first). Taking or closing the session's egress forgets its notes. Notes hold
ids, a host, a port and the proxy's own reason text: never a credential's value.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

from corral.contracts.egress import CredentialHostFailure

MAX_SESSIONS: Final = 4096
MAX_PER_SESSION: Final = 32
#: Reasons are the proxy's own one-line answers; cut so a reply of ``MAX_PER_SESSION`` stays small.
MAX_REASON_CHARS: Final = 300


@dataclass
class HostFailures:
    max_sessions: int = MAX_SESSIONS
    max_per_session: int = MAX_PER_SESSION
    _sessions: OrderedDict[str, dict[str, CredentialHostFailure]] = field(default_factory=OrderedDict, repr=False)

    def note(self, session_id: str, credentials: list[tuple[str, str]], host: str, port: int, reason: str) -> None:
        """Note that ``credentials`` (``(credential_id, vault_id)`` bound to ``host``) could not be reached."""
        if not credentials:
            return
        notes = self._sessions.get(session_id)
        if notes is None:
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
            notes = self._sessions[session_id] = {}
        else:
            self._sessions.move_to_end(session_id)
        for credential_id, vault_id in credentials:
            known = notes.get(credential_id)
            if known is not None:
                notes[credential_id] = known.model_copy(update={"attempts": known.attempts + 1})
            elif len(notes) < self.max_per_session:
                notes[credential_id] = CredentialHostFailure(
                    credential_id=credential_id,
                    vault_id=vault_id,
                    host=host,
                    port=port,
                    reason=_cut(reason),
                )

    def take(self, session_id: str) -> list[CredentialHostFailure]:
        """The session's notes, in the order the credentials first failed; they are forgotten."""
        return list(self._sessions.pop(session_id, {}).values())

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)


def _cut(reason: str) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
