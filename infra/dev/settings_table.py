"""Generate the README's table of service settings from the services' ``Settings`` classes.

python infra/dev/settings_table.py           # rewrite the table in README.md
python infra/dev/settings_table.py --check   # exit 1 when the README's table is stale

Every variable a service reads is a field of its ``Settings`` (or of a shared fragment in
``corral.settings`` it nests); a variable several services read is one row naming them all.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pydantic import AliasChoices, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from corral.credential_proxy.settings import Settings as CredentialProxySettings
from corral.embedded_model.settings import Settings as EmbeddedModelSettings
from corral.gateway.settings import Settings as GatewaySettings
from corral.harness.settings import Settings as HarnessSettings
from corral.sandbox_manager.settings import Settings as SandboxManagerSettings
from corral.session_store.settings import Settings as SessionStoreSettings
from corral.settings import TelemetrySettings, Variable, variables

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- settings table: generated from the Settings classes by infra/dev/settings_table.py; do not edit -->"
END = "<!-- end of the generated settings table -->"

SERVICES: dict[str, type[BaseSettings]] = {
    "gateway": GatewaySettings,
    "session-store": SessionStoreSettings,
    "harness": HarnessSettings,
    "sandbox-manager": SandboxManagerSettings,
    "credential-proxy": CredentialProxySettings,
    "embedded-model": EmbeddedModelSettings,
}


@dataclass
class Row:
    variable: Variable
    services: list[str] = field(default_factory=list)


def default_of(variable: Variable) -> str:
    info = variable.info
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if variable.field == "worker_id":
            return "host name and pid"
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "set"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple | list):
        return json.dumps([v if isinstance(v, int | float) else str(v) for v in value])
    return str(value) if str(value) != "" else "empty"


def former_names(variable: Variable) -> list[str]:
    """The names ``variable`` had before (``corral.settings.renamed``), still read for one release."""
    alias = variable.info.validation_alias
    if not isinstance(alias, AliasChoices):
        return []
    return [choice for choice in alias.choices[1:] if isinstance(choice, str)]


def meaning(variable: Variable) -> str:
    text = variable.info.description or ""
    former = former_names(variable)
    if former:
        names = ", ".join(f"`{name}`" for name in former)
        text += f" (formerly {names}: still read, with a deprecation warning, until the next release)"
    return " ".join(text.split()).replace("|", "\\|")


def rows() -> list[Row]:
    found: dict[str, Row] = {}
    for variable in variables(TelemetrySettings):  # read by telemetry.configure in every service
        found[variable.name] = Row(variable, list(SERVICES))
    for service, settings_type in SERVICES.items():
        for variable in variables(settings_type):
            row = found.setdefault(variable.name, Row(variable))
            if service not in row.services:
                row.services.append(service)
    return sorted(found.values(), key=lambda r: r.variable.name)


def table() -> str:
    lines = [
        BEGIN,
        "",
        "| variable | default | read by | meaning |",
        "|---|---|---|---|",
    ]
    for row in rows():
        readers = "every service" if len(row.services) == len(SERVICES) else ", ".join(row.services)
        lines.append(f"| `{row.variable.name}` | {default_of(row.variable)} | {readers} | {meaning(row.variable)} |")
    lines += ["", END]
    return "\n".join(lines)


def render(readme: str) -> str:
    """``readme`` with its generated table replaced by the current one."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md has no generated settings table (between {BEGIN!r} and {END!r})")
    return readme[:start] + table() + readme[end + len(END) :]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if README.md's table differs from the settings")
    args = parser.parse_args()
    current = README.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            sys.stderr.write("README.md's settings table is stale; run `make gen` and commit the result\n")
            return 1
        return 0
    if wanted != current:
        README.write_text(wanted)
        sys.stdout.write("rewrote the settings table in README.md\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
