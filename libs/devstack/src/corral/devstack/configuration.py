"""A stack's configuration: what it is made of, read once from its arguments and the environment.

Pure: nothing here starts, stops or probes anything (the one file it looks at is this host's CA
bundle, a default).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.devstack.errors import DevstackError
from corral.devstack.nats import SYNC_INTERVAL_VAR, sync_interval
from corral.devstack.sandbox_image import ImageSettings
from corral.devstack.services import ModelConfig, service_names

#: What the sandbox-manager's environment image builds trust besides the sandbox image's CAs.
ENVIRONMENT_CA_VAR = "CORRAL_SANDBOX_ENVIRONMENT_CA_FILE"


def host_ca_bundle() -> str | None:
    """This host's CA bundle, the one Python verifies TLS against by default (``SSL_CERT_FILE``, else
    OpenSSL's, e.g. ``/etc/ssl/certs/ca-certificates.crt``), if it has one."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _int_env(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DevstackError(f"{var}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class StackConfig:
    """The settings of one stack (see ``Stack`` for where each comes from)."""

    environ: Mapping[str, str]
    harness_count: int
    services_enabled: bool
    docker_enabled: bool
    log_level: str
    external_database_url: str | None
    external_docker_host: str | None
    #: ``CORRAL_DOCKER_DATA_ROOT`` (None: the state directory's ``data/docker``).
    docker_data_root: Path | None

    @classmethod
    def read(
        cls,
        *,
        environ: Mapping[str, str] | None,
        harness_count: int | None,
        services: bool,
        docker: bool,
        log_level: str | None,
    ) -> StackConfig:
        env: dict[str, str] = dict(os.environ if environ is None else environ)
        count = harness_count if harness_count is not None else _int_env(env, "CORRAL_HARNESS_COUNT", 2)
        if count < 1:
            raise DevstackError("CORRAL_HARNESS_COUNT must be at least 1")
        data_root = env.get("CORRAL_DOCKER_DATA_ROOT", "").strip()
        return cls(
            environ=env,
            harness_count=count,
            services_enabled=services,
            docker_enabled=docker,
            log_level=log_level or env.get("CORRAL_LOG_LEVEL") or "INFO",
            external_database_url=env.get("DATABASE_URL") or None,
            external_docker_host=env.get("CORRAL_DOCKER_HOST") or None,
            docker_data_root=Path(data_root) if data_root else None,
        )

    def model(self, embedded_model_port: int) -> ModelConfig:
        return ModelConfig.from_env(self.environ, embedded_model_port)

    @property
    def nats_sync_interval(self) -> str:
        return sync_interval(self.environ.get(SYNC_INTERVAL_VAR))

    @property
    def image_settings(self) -> ImageSettings:
        return ImageSettings.from_env(self.environ)

    @property
    def otel_endpoint(self) -> str | None:
        return self.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None

    @property
    def environment_ca_file(self) -> str:
        """The CA certificates the sandbox-manager's environment image builds trust
        (``CORRAL_SANDBOX_ENVIRONMENT_CA_FILE``): as set (empty: none), else this host's CA bundle.

        A dev stack's builds reach the package registries from this machine (through the
        credential-proxy), so they trust what this machine trusts: behind a TLS-intercepting proxy,
        that is the proxy's CA, without which pip and npm fail certificate verification.
        """
        if ENVIRONMENT_CA_VAR in self.environ:
            return self.environ[ENVIRONMENT_CA_VAR].strip()
        return host_ca_bundle() or ""

    @property
    def sandbox_image(self) -> str | None:
        """The image the sandbox-manager gets (``CORRAL_SANDBOX_IMAGE``): the content tag."""
        if self.docker_enabled:
            return self.image_settings.tag
        return self.environ.get("CORRAL_SANDBOX_IMAGE") or None

    def service_names(self, embedded_model: bool) -> list[str]:
        if not self.services_enabled:
            return []
        return service_names(self.harness_count, embedded_model)
