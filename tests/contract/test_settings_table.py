"""The README's table of service settings is generated from the ``Settings`` classes and is current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from corral.gateway.settings import Settings as GatewaySettings

GENERATOR = Path(__file__).resolve().parents[2] / "infra" / "dev" / "settings_table.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_table", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_readme_settings_table_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_table_is_noticed() -> None:
    table = generator()
    readme = table.README.read_text()
    stale = readme.replace("| `CORRAL_GATEWAY_PORT` | 8080 |", "| `CORRAL_GATEWAY_PORT` | 8081 |")
    assert stale != readme
    assert table.render(stale) == readme


def test_every_field_of_every_service_has_a_row() -> None:
    table = generator()
    names = {row.variable.name for row in table.rows()}
    assert {
        "CORRAL_GATEWAY_PORT",
        "CORRAL_NATS_URL",
        "CORRAL_SANDBOX_POOL_SIZE",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    } <= names
    assert len(names) >= len(GatewaySettings.model_fields)
