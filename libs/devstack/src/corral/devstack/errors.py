"""Errors raised by the launcher; each carries a message meant for a person at a terminal."""

from __future__ import annotations


class DevstackError(Exception):
    """Something the launcher could not do; ``str(error)`` says what and what to change."""


class PortInUseError(DevstackError):
    """A port a component needs is already taken by some other process."""

    def __init__(self, port: int, component: str, env_var: str) -> None:
        self.port = port
        self.component = component
        self.env_var = env_var
        super().__init__(f"port {port} ({component}) is in use; set {env_var} to another port")


class ComponentDiedError(DevstackError):
    """A process exited while the launcher was waiting for it to become ready."""

    def __init__(self, component: str, log_path: str, log_tail: str) -> None:
        self.component = component
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(f"{component} exited during startup; last lines of {log_path}:\n{log_tail}")


class ReadinessTimeoutError(DevstackError):
    """A component did not become healthy before the deadline."""

    def __init__(self, component: str, detail: str) -> None:
        self.component = component
        self.detail = detail
        super().__init__(f"{component} did not become ready in time: {detail}")
