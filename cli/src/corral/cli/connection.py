"""Where Corral is and which key to use: ``--base-url``/``--api-key``, else ``ANTHROPIC_BASE_URL`` /
``ANTHROPIC_API_KEY``, else the ``.corral/env`` file ``make up`` writes (looked for in the current
directory and its parents)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anthropic

from corral.cli.failure import Failure

ENV_FILE = Path(".corral") / "env"


def find_env_file(start: Path) -> Path | None:
    """The nearest ``.corral/env`` from ``start`` upwards."""
    for directory in (start, *start.parents):
        candidate = directory / ENV_FILE
        if candidate.is_file():
            return candidate
    return None


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (blank lines, comments and ``export`` prefixes allowed)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


@dataclass(frozen=True)
class Connection:
    base_url: str
    api_key: str

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, *, cwd: Path) -> Connection:
        if not (base_url and api_key):
            env_file = find_env_file(cwd)
            if env_file is not None:
                values = read_env_file(env_file)
                base_url = base_url or values.get("ANTHROPIC_BASE_URL")
                api_key = api_key or values.get("ANTHROPIC_API_KEY")
        if not base_url:
            raise Failure(
                "no Corral to talk to: set ANTHROPIC_BASE_URL (and ANTHROPIC_API_KEY), pass --base-url, "
                "or run from a checkout where `make up` wrote .corral/env"
            )
        if not api_key:
            raise Failure(f"no API key for {base_url}: set ANTHROPIC_API_KEY or pass --api-key")
        return cls(base_url=base_url.rstrip("/"), api_key=api_key)

    def client(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base_url, api_key=self.api_key, max_retries=1, timeout=60)
