"""The Docker engine this sandbox-manager drives, and a probe of whether it answers."""

from __future__ import annotations

import asyncio

import docker
from docker.errors import DockerException


class Engine:
    def __init__(self, docker_host: str | None) -> None:
        self._docker_host = docker_host

    def _ping(self) -> str:
        client = docker.DockerClient(base_url=self._docker_host) if self._docker_host else docker.from_env()
        try:
            version = client.version()
            return str(version.get("Version", "unknown"))
        finally:
            client.close()

    async def probe(self, timeout: float) -> str | None:
        """The engine's version, or ``None`` when no engine answers within ``timeout``."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._ping), timeout)
        except (DockerException, OSError, TimeoutError):
            return None
