"""The launcher's configuration (``corral.devstack.configuration``): every variable it reads, read there."""

from __future__ import annotations

import logging

import pytest

from corral.devstack import DevstackError, ModelConfig, Ports
from corral.devstack.configuration import (
    StackConfig,
    docker_wanted,
    read_image_settings,
    read_model,
    read_ports,
    state_dir,
    up_timeout,
)


def config(environ: dict[str, str]) -> StackConfig:
    return StackConfig.read(environ=environ, harness_count=None, services=True, docker=False, log_level=None)


def test_ports_default_to_make_up_values_and_follow_env_vars() -> None:
    assert read_ports({}) == Ports()
    ports = read_ports({"CORRAL_GATEWAY_PORT": "9000", "CORRAL_BAO_PORT": "9200"})
    assert ports.gateway == 9000
    assert (ports.bao, ports.bao_cluster) == (9200, 9201)


def test_a_bad_port_setting_names_its_env_var() -> None:
    with pytest.raises(DevstackError, match="CORRAL_NATS_PORT"):
        read_ports({"CORRAL_NATS_PORT": "nats"})


def test_the_embedded_model_is_used_unless_a_real_model_is_configured() -> None:
    assert read_model({}, 8090) == ModelConfig(True, "http://127.0.0.1:8090", "embedded")
    # a sourced .corral/env sets ANTHROPIC_API_KEY to the dev key: that is not a model key
    assert read_model({"ANTHROPIC_API_KEY": "sk-corral-dev-abc"}, 8090).embedded
    assert read_model({"ANTHROPIC_API_KEY": "sk-ant-real"}, 8090) == ModelConfig(False, None, "sk-ant-real")
    assert read_model({"CORRAL_MODEL_API_KEY": "sk-ant-other"}, 8090).api_key == "sk-ant-other"
    custom = read_model({"CORRAL_MODEL_BASE_URL": "http://m:1", "CORRAL_MODEL_API_KEY": "k"}, 8090)
    assert custom == ModelConfig(False, "http://m:1", "k")


def test_an_external_postgres_is_corral_postgres_url(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert config({"CORRAL_POSTGRES_URL": "postgresql://a@h:1/d"}).external_database_url == "postgresql://a@h:1/d"
        assert config({}).external_database_url is None
    assert "deprecated" not in caplog.text


def test_the_old_database_url_still_works_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert config({"DATABASE_URL": "postgresql://old@h:1/d"}).external_database_url == "postgresql://old@h:1/d"
    assert "DATABASE_URL is deprecated" in caplog.text and "CORRAL_POSTGRES_URL" in caplog.text
    both = {"DATABASE_URL": "postgresql://old@h:1/d", "CORRAL_POSTGRES_URL": "postgresql://new@h:1/d"}
    assert config(both).external_database_url == "postgresql://new@h:1/d"


def test_the_launchers_own_variables() -> None:
    assert str(state_dir({})) == ".corral" and str(state_dir({"CORRAL_STATE_DIR": "/s"})) == "/s"
    assert up_timeout({}, 60.0) == 60.0 and up_timeout({"CORRAL_UP_TIMEOUT": "90"}, 60.0) == 90.0
    assert docker_wanted({}) is None
    assert docker_wanted({"CORRAL_DOCKER": "off"}) is False and docker_wanted({"CORRAL_DOCKER": "1"}) is True
    with pytest.raises(DevstackError, match="CORRAL_DOCKER"):
        docker_wanted({"CORRAL_DOCKER": "maybe"})
    with pytest.raises(DevstackError, match="CORRAL_UP_TIMEOUT"):
        up_timeout({"CORRAL_UP_TIMEOUT": "soon"}, 60.0)
    with pytest.raises(DevstackError, match="CORRAL_SANDBOX_BUILD"):
        read_image_settings({"CORRAL_SANDBOX_BUILD": "magic"})
    assert config({}).harness_count == 1  # `make up`: one harness unless asked for more
    assert config({"CORRAL_HARNESS_COUNT": "3", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"}).harness_count == 3
    assert config({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"}).otel_endpoint == "http://o:4318"
