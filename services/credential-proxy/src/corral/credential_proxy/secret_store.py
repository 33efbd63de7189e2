"""Credential secrets in OpenBao (KV v2, mount ``corral``): write, read, delete. Nothing else keeps them.

One secret per credential, at ``workspaces/<workspace_id>/vaults/<vault_id>/credentials/<credential_id>``,
its data the credential's secret parts (``corral.contracts.api.vaults.split_secrets``). Each path keeps
one version only (``max_versions=1``), so a replaced secret is destroyed rather than kept as history, and
a delete removes the metadata and every version. Values are never logged, and the errors raised here
name the credential, never a value.

hvac is synchronous: every call runs in a worker thread, bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import hvac
import requests
from hvac.exceptions import Forbidden, InvalidPath, VaultError

KV_MOUNT: Final = "corral"
_ID = re.compile(r"^[A-Za-z0-9_]{1,80}$")

T = TypeVar("T")


class SecretStoreUnavailable(Exception):
    """OpenBao cannot be used right now (unreachable, sealed, refusing the credential-proxy's token)."""


def credential_path(workspace_id: str, vault_id: str, credential_id: str) -> str:
    return f"{vault_path(workspace_id, vault_id)}/credentials/{_checked(credential_id)}"


def vault_path(workspace_id: str, vault_id: str) -> str:
    return f"workspaces/{_checked(workspace_id)}/vaults/{_checked(vault_id)}"


def _checked(part: str) -> str:
    # ids become path segments: nothing that could climb out of (or across) the credential paths
    if not _ID.fullmatch(part):
        raise ValueError(f"{part!r} is not an id")
    return part


@dataclass(frozen=True)
class SecretStore:
    """The credential secrets of every workspace, through ``client`` (the credential-proxy's token)."""

    client: hvac.Client
    timeout_s: float = 10.0
    mount: str = KV_MOUNT

    async def _run(self, call: Callable[[], T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: on 3.11 it can swallow a cancel
                return await asyncio.to_thread(call)
        except InvalidPath:
            raise
        except Forbidden as exc:
            raise SecretStoreUnavailable(
                "OpenBao refused the credential-proxy's token for the credential path"
            ) from exc
        except (requests.RequestException, VaultError, OSError, TimeoutError) as exc:
            raise SecretStoreUnavailable(f"OpenBao cannot be used right now ({type(exc).__name__})") from exc

    async def write(self, path: str, secret: dict[str, str]) -> None:
        """Store ``secret`` at ``path`` as its only version (an earlier one is destroyed)."""
        kv = self.client.secrets.kv.v2

        def write() -> None:
            kv.update_metadata(path, max_versions=1, mount_point=self.mount)
            kv.create_or_update_secret(path, secret=secret, mount_point=self.mount)

        await self._run(write)

    async def read(self, path: str) -> dict[str, str] | None:
        """The secret at ``path``, or ``None`` when there is none."""
        kv = self.client.secrets.kv.v2
        read = functools.partial(kv.read_secret_version, path, mount_point=self.mount, raise_on_deleted_version=True)
        try:
            response = await self._run(read)
        except InvalidPath:
            return None
        data = response.get("data", {}).get("data")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    async def delete(self, path: str) -> None:
        """Remove the secret at ``path``, every version and its metadata; nothing there is fine."""
        kv = self.client.secrets.kv.v2
        remove = functools.partial(kv.delete_metadata_and_all_versions, path, mount_point=self.mount)
        try:
            await self._run(remove)
        except InvalidPath:
            return

    async def list(self, directory: str) -> list[str]:
        """The names under ``directory`` (``name`` for a secret, ``name/`` for a folder); ``[]`` for none."""
        kv = self.client.secrets.kv.v2
        listing = functools.partial(kv.list_secrets, directory, mount_point=self.mount)
        try:
            response = await self._run(listing)
        except InvalidPath:
            return []
        keys = response.get("data", {}).get("keys") or []
        return [str(k) for k in keys]

    async def delete_tree(self, directory: str) -> int:
        """Remove every secret under ``directory`` (depth first); how many were removed."""
        removed = 0
        for name in await self.list(directory):
            if name.endswith("/"):
                removed += await self.delete_tree(f"{directory}/{name.rstrip('/')}")
            else:
                await self.delete(f"{directory}/{name}")
                removed += 1
        return removed
