"""What a stack's configuration says, as ``Stack`` has always exposed it (``stack.harness_count``...)."""

from __future__ import annotations

from collections.abc import Mapping

from corral.devstack.configuration import ImageSettings, ModelConfig, StackConfig
from corral.devstack.ports import Ports
from corral.devstack.sandbox_image import image_tag


class Configured:
    """The configuration's values for ``Topology`` (and so ``Stack``), which sets ``config`` and ``ports``."""

    config: StackConfig
    ports: Ports

    @property
    def environ(self) -> Mapping[str, str]:
        return self.config.environ

    @property
    def harness_count(self) -> int:
        return self.config.harness_count

    @property
    def services_enabled(self) -> bool:
        return self.config.services_enabled

    @property
    def docker_enabled(self) -> bool:
        return self.config.docker_enabled

    @property
    def log_level(self) -> str:
        return self.config.log_level

    @property
    def external_database_url(self) -> str | None:
        return self.config.external_database_url

    @property
    def external_docker_host(self) -> str | None:
        return self.config.external_docker_host

    @property
    def model(self) -> ModelConfig:
        return self.config.model(self.ports.embedded_model)

    @property
    def image_settings(self) -> ImageSettings:
        return self.config.image_settings

    @property
    def environment_ca_file(self) -> str:
        """See ``StackConfig.environment_ca_file``."""
        return self.config.environment_ca_file

    @property
    def sandbox_image(self) -> str | None:
        """The image the sandbox-manager gets (``CORRAL_SANDBOX_IMAGE``): the content tag."""
        if self.docker_enabled:
            return image_tag(self.image_settings)
        return self.config.sandbox_image_override
