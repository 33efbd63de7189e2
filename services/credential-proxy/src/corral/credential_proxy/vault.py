"""The OpenBao/Vault client. The token stays inside this module's client object and is never logged."""

from __future__ import annotations

import asyncio

import hvac
import requests
from hvac.exceptions import VaultError
from pydantic import SecretStr


class Vault:
    def __init__(self, addr: str, token: SecretStr | None, *, timeout: float) -> None:
        self._client = hvac.Client(
            url=addr, token=token.get_secret_value() if token else None, timeout=max(1, round(timeout))
        )

    def _status(self) -> str:
        health = self._client.sys.read_health_status(method="GET")
        if isinstance(health, dict):
            if health.get("sealed"):
                return "sealed"
            if not health.get("initialized", True):
                return "not initialized"
        elif getattr(health, "status_code", 200) != 200:
            return f"unhealthy (HTTP {health.status_code})"
        if not self._client.is_authenticated():
            return "token rejected"
        return "ok"

    async def probe(self, timeout: float) -> str:
        """``ok`` or a short reason the vault is not usable (never containing the token)."""
        try:
            async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel
                return await asyncio.to_thread(self._status)
        except (requests.RequestException, VaultError, OSError, TimeoutError):
            return "unreachable"
