"""The ``allowed_domains`` / ``blocked_domains`` of the ``web_fetch`` and ``web_search`` tools (pure).

An entry names a host, matched with its subdomains at any depth (``example.com`` matches
``example.com`` and ``docs.example.com``, not ``badexample.com``), case-insensitively, a trailing dot
ignored. A ``web_search`` entry may add a path (``example.com/docs``): then only URLs under that path
match. An IP address entry matches that address only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class DomainRule:
    host: str
    path: str = ""

    @classmethod
    def parse(cls, entry: str) -> DomainRule:
        text = entry.strip().lower()
        if "://" in text:
            text = text.split("://", 1)[1]
        host, _, path = text.partition("/")
        host = host.removeprefix("*.").removeprefix(".").removesuffix(".")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return cls(host=host, path=f"/{path}".rstrip("/") if path else "")

    def matches(self, host: str, path: str = "/") -> bool:
        host = host.lower().removesuffix(".")
        if not (host == self.host or host.endswith("." + self.host)):
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")


def _rules(entries: Sequence[str] | None) -> tuple[DomainRule, ...]:
    return tuple(DomainRule.parse(e) for e in entries or () if e.strip())


def domain_problem(host: str, path: str, allowed: Sequence[str] | None, blocked: Sequence[str] | None) -> str | None:
    """Why the tool's domains refuse ``host`` (``path``: the URL's path), or ``None`` when they allow it."""
    allow, block = _rules(allowed), _rules(blocked)
    if allow and not any(rule.matches(host, path) for rule in allow):
        listed = ", ".join(e for e in allowed or ())
        return f"{host} is not in the tool's allowed_domains ({listed})"
    for rule, entry in zip(block, [e for e in blocked or () if e.strip()], strict=True):
        if rule.matches(host, path):
            return f"{host} is in the tool's blocked_domains ({entry})"
    return None


def url_allowed(url: str, allowed: Sequence[str] | None, blocked: Sequence[str] | None) -> bool:
    """Whether a search result's URL passes the tool's domains."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    return domain_problem(parts.hostname, parts.path or "/", allowed, blocked) is None
