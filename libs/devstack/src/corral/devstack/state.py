"""The state directory: layout, secret files, the dev API key, the client env file, the record."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = ".corral"
DEV_KEY_PREFIX = "sk-corral-dev-"
ADMIN_KEY_PREFIX = "sk-corral-admin-"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


@dataclass(frozen=True)
class StateDir:
    """Paths under the state directory (default ``.corral/``)::

    data/nats  data/postgres  data/openbao   component data, kept across down/up
    logs/<name>.log                          stdout+stderr of each component
    pids/<name>.pid                          pid of each running component
    env                                      ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY for clients
    dev-api-key                              the dev API key (0600)
    nats-users.json                          NATS users' passwords, one per service plus admin (0600)
    nats.conf                                NATS server config with those users (0600, rewritten on each start)
    openbao-init.json                        OpenBao unseal key and root token (0600; a dev convenience)
    openbao-credential-proxy.json            the credential-proxy's AppRole role id and secret id (0600)
    logs/openbao-audit.log                   OpenBao's audit log (0600, values HMAC'd)
    openbao.hcl                              OpenBao server config (rewritten on each start)
    stack.json                               ports and services of the last ``up``
    """

    root: Path

    @classmethod
    def at(cls, path: Path | str) -> StateDir:
        return cls(Path(path).expanduser().absolute())

    def data(self, name: str) -> Path:
        return self.root / "data" / name

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.root / "pids"

    def log_file(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.pids_dir / f"{name}.pid"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def api_key_file(self) -> Path:
        return self.root / "dev-api-key"

    @property
    def admin_key_file(self) -> Path:
        return self.root / "admin-key"

    @property
    def nats_users_file(self) -> Path:
        return self.root / "nats-users.json"

    @property
    def nats_config_file(self) -> Path:
        return self.root / "nats.conf"

    @property
    def openbao_init_file(self) -> Path:
        return self.root / "openbao-init.json"

    @property
    def openbao_config_file(self) -> Path:
        return self.root / "openbao.hcl"

    @property
    def record_file(self) -> Path:
        return self.root / "stack.json"

    def ensure_layout(self) -> None:
        for directory in (
            self.data("nats"),
            self.data("openbao"),
            self.logs_dir,
            self.pids_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)

    def pid_names(self) -> list[str]:
        """Names of the components that have a pid file."""
        if not self.pids_dir.is_dir():
            return []
        return sorted(p.stem for p in self.pids_dir.glob("*.pid"))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise launcher invocations on this state dir (``up`` racing ``down``)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def dev_api_key(self) -> str:
        """The dev API key: generated on first use, then reused."""
        return self._key(self.api_key_file, DEV_KEY_PREFIX)

    def admin_api_key(self) -> str:
        """The admin API key (role ``admin``: the admin API, ``/v1/organizations/...``): generated on
        first use, then reused."""
        return self._key(self.admin_key_file, ADMIN_KEY_PREFIX)

    def _key(self, path: Path, prefix: str) -> str:
        if path.exists():
            key = path.read_text().strip()
            if key.startswith(prefix):
                return key
        key = prefix + secrets.token_urlsafe(24)  # 24 bytes -> 32 urlsafe chars
        self.root.mkdir(parents=True, exist_ok=True)
        write_private(path, key + "\n")
        return key

    def write_client_env(self, gateway_url: str, api_key: str) -> None:
        write_private(
            self.env_file,
            f"ANTHROPIC_BASE_URL={gateway_url}\nANTHROPIC_API_KEY={api_key}\n",
        )

    def read_record(self) -> dict[str, Any]:
        try:
            data = json.loads(self.record_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_record(self, record: Mapping[str, Any]) -> None:
        write_private(self.record_file, json.dumps(record, indent=2, sort_keys=True) + "\n")
