"""The OpenBao/Vault client and its login. The token stays inside this module's client object and is
never logged.

With an AppRole (``CORRAL_OPENBAO_ROLE_ID`` + ``CORRAL_OPENBAO_SECRET_ID``), ``Vault.running()`` logs
in, then one task keeps the token fresh: it renews the token once two thirds of its lease have
passed, and logs in again when a renewal fails or gives a shorter lease than a login does (the
token nears its maximum TTL). A login that fails is retried with a growing delay (up to
``_RETRY_MAX_S``); meanwhile health says why. Leaving ``running()`` stops the task and revokes the
token. With a fixed token (``CORRAL_OPENBAO_TOKEN``) nothing is renewed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import hvac
import requests
from hvac.exceptions import VaultError

from corral.credential_proxy.settings import OpenBaoSettings

logger = logging.getLogger("corral.credential_proxy.vault")

#: Renew once this fraction of the lease has passed.
_RENEW_AT = 2 / 3
_RENEW_FLOOR_S = 0.5
_RETRY_MIN_S = 1.0
_RETRY_MAX_S = 30.0
_NETWORK_ERRORS = (requests.RequestException, OSError, TimeoutError)


class Vault:
    def __init__(self, settings: OpenBaoSettings, *, timeout: float) -> None:
        self._settings = settings
        token = settings.token.get_secret_value() if settings.token is not None else None
        self._client = hvac.Client(url=settings.addr, token=token, timeout=max(1, round(timeout)))
        #: why there is no usable AppRole token (None: logged in, or a fixed token)
        self._login_problem: str | None = "not logged in yet" if self.uses_approle else None
        self._lease_s = 0.0  # what a login gives
        self._expires = 0.0  # monotonic time the current token's lease ends
        self._retry_s = _RETRY_MIN_S
        self.logins = 0
        self.renewals = 0

    @property
    def uses_approle(self) -> bool:
        return self._settings.role_id is not None

    @property
    def client(self) -> hvac.Client:
        """The client, carrying the current token; call it from a thread (``asyncio.to_thread``)."""
        return self._client

    # -- login and renewal ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Vault]:
        """Log in (AppRole) and keep the token fresh until exit; then revoke it."""
        if not self.uses_approle:
            yield self
            return
        first = self._renew_in() if await self._login() else self._backoff()
        async with asyncio.TaskGroup() as tasks:
            keeper = tasks.create_task(self._keep_fresh(first), name="openbao-token")
            try:
                yield self
            finally:
                keeper.cancel()
        await self._revoke()

    def _login_sync(self) -> dict[str, Any]:
        settings = self._settings
        assert settings.role_id is not None and settings.secret_id is not None
        result: dict[str, Any] = self._client.auth.approle.login(
            role_id=settings.role_id,
            secret_id=settings.secret_id.get_secret_value(),
            use_token=True,
            mount_point=settings.approle_mount,
        )
        return result

    async def _login(self) -> bool:
        try:
            auth = (await asyncio.to_thread(self._login_sync))["auth"]
        except _NETWORK_ERRORS as exc:
            self._login_failed("unreachable", exc)
            return False
        except VaultError as exc:
            # a wrong role id or secret id, a sealed server, a bound CIDR not matching...
            self._login_failed("login refused", exc)
            return False
        self._lease_s = float(auth.get("lease_duration") or 0)
        self._expires = time.monotonic() + self._lease_s
        self._login_problem = None
        self._retry_s = _RETRY_MIN_S
        self.logins += 1
        logger.info(
            "logged in to OpenBao with the AppRole",
            extra={"fields": {"lease_s": self._lease_s, "renewable": bool(auth.get("renewable"))}},
        )
        return True

    def _login_failed(self, problem: str, exc: BaseException) -> None:
        if self._expires <= time.monotonic():  # else the token in hand still works until it expires
            self._login_problem = problem
        logger.warning(
            "OpenBao login failed; retrying",
            extra={"fields": {"problem": problem, "error": type(exc).__name__, "retry_in_s": self._retry_s}},
        )

    async def _renew(self) -> bool | None:
        """True: renewed for a full lease; False: renewal refused or capped (log in again);
        None: OpenBao did not answer (try again later, the token still works)."""
        try:
            result = await asyncio.to_thread(self._client.auth.token.renew_self)
        except _NETWORK_ERRORS as exc:
            logger.warning("OpenBao token renewal failed; retrying", extra={"fields": {"error": type(exc).__name__}})
            return None
        except VaultError as exc:  # expired, revoked, not renewable
            logger.info(
                "OpenBao token renewal refused; logging in again", extra={"fields": {"error": type(exc).__name__}}
            )
            return False
        lease = float(result["auth"].get("lease_duration") or 0)
        self._expires = time.monotonic() + lease
        self.renewals += 1
        return lease >= self._lease_s  # shorter: capped by the token's maximum TTL

    def _renew_in(self) -> float:
        return max(self._lease_s * _RENEW_AT, _RENEW_FLOOR_S)

    def _backoff(self) -> float:
        delay, self._retry_s = self._retry_s, min(self._retry_s * 2, _RETRY_MAX_S)
        return delay

    async def _refresh(self) -> float:
        """Renew or log in; how long until the next refresh."""
        if self._login_problem is None and self._expires > time.monotonic():
            renewed = await self._renew()
            if renewed is None:
                return self._backoff()
            if renewed:
                self._retry_s = _RETRY_MIN_S
                return self._renew_in()
        if await self._login():
            return self._renew_in()
        return self._backoff()

    async def _keep_fresh(self, delay: float) -> None:
        while True:
            await asyncio.sleep(delay)  # a timer: the next renewal is due
            delay = await self._refresh()

    async def _revoke(self) -> None:
        if self._login_problem is not None:
            return
        try:
            async with asyncio.timeout(5):
                await asyncio.to_thread(self._client.auth.token.revoke_self)
        except (*_NETWORK_ERRORS, VaultError) as exc:
            logger.info("could not revoke the OpenBao token at stop", extra={"fields": {"error": type(exc).__name__}})

    # -- health ---------------------------------------------------------------------------

    def _status(self) -> str:
        health = self._client.sys.read_health_status(method="GET")
        if isinstance(health, dict):
            if health.get("sealed"):
                return "sealed"
            if not health.get("initialized", True):
                return "not initialized"
        elif getattr(health, "status_code", 200) != 200:
            return f"unhealthy (HTTP {health.status_code})"
        if self._login_problem is not None:
            return self._login_problem
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
