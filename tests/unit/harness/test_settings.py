from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from corral.harness.settings import PLACEHOLDER_API_KEY, Settings, model_endpoint

MODEL_VARS = ("CORRAL_MODEL_BASE_URL", "CORRAL_MODEL_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*MODEL_VARS, "CORRAL_HARNESS_CRASHPOINT", "CORRAL_HARNESS_WORKER_ID"):
        monkeypatch.delenv(var, raising=False)


def test_without_any_model_the_harness_refuses_to_start_and_says_what_to_set() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings()

    assert "CORRAL_MODEL_BASE_URL" in str(raised.value)
    assert "ANTHROPIC_API_KEY" in str(raised.value)


def test_a_model_base_url_alone_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MODEL_BASE_URL", "http://127.0.0.1:9999")

    settings = Settings()
    endpoint = model_endpoint(settings)

    assert endpoint.base_url == "http://127.0.0.1:9999"
    assert endpoint.api_key.get_secret_value() == PLACEHOLDER_API_KEY
    assert (settings.lease_ttl_s, settings.ack_wait_s, settings.max_model_retries) == (10.0, 30.0, 3)
    assert (settings.retry_backoff_s, settings.max_tokens, settings.concurrency) == (1.0, 4096, 8)
    assert settings.shutdown_grace_s == 5.0
    assert settings.worker_id


def test_corral_model_settings_win_over_the_anthropic_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MODEL_BASE_URL", "http://model.local")
    monkeypatch.setenv("CORRAL_MODEL_API_KEY", "embedded")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")

    endpoint = model_endpoint(Settings())

    assert (endpoint.base_url, endpoint.api_key.get_secret_value()) == ("http://model.local", "embedded")


def test_an_anthropic_key_alone_means_the_real_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-real")
    monkeypatch.setenv("CORRAL_MODEL_BASE_URL", "")

    endpoint = model_endpoint(Settings())

    assert endpoint.base_url is None
    assert endpoint.describe() == "Anthropic API"


def test_the_key_never_shows_in_the_settings_or_the_endpoint_description(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CORRAL_MODEL_API_KEY", "sk-ant-secret-value")
    settings = Settings()

    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s %s", settings, model_endpoint(settings).describe())

    assert "sk-ant-secret-value" not in caplog.text
    assert "sk-ant-secret-value" not in repr(model_endpoint(settings))


def test_an_invalid_value_is_reported_without_echoing_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    monkeypatch.setenv("CORRAL_HARNESS_CONCURRENCY", "0")

    with pytest.raises(ValidationError) as raised:
        Settings()

    assert "concurrency" in str(raised.value)
    assert "sk-ant-secret-value" not in str(raised.value)


def test_crashpoints_are_checked_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MODEL_BASE_URL", "http://model.local")
    monkeypatch.setenv("CORRAL_HARNESS_CRASHPOINT", "mid_stream")
    assert Settings().crashpoint == "mid_stream"

    monkeypatch.setenv("CORRAL_HARNESS_CRASHPOINT", "mid-stream")
    with pytest.raises(ValidationError, match="unknown crashpoint"):
        Settings()


def test_context_settings_have_defaults_overrides_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_MODEL_BASE_URL", "http://127.0.0.1:9999")
    settings = Settings()
    assert (settings.context_window_tokens, settings.compact_threshold, settings.keep_tool_results) == (None, 0.8, 3)
    assert (settings.tool_result_max_chars, settings.summary_max_tokens, settings.count_tokens) == (100_000, 2048, True)

    monkeypatch.setenv("CORRAL_HARNESS_CONTEXT_WINDOW_TOKENS", "32000")
    monkeypatch.setenv("CORRAL_HARNESS_COUNT_TOKENS", "false")
    assert (Settings().context_window_tokens, Settings().count_tokens) == (32_000, False)

    monkeypatch.setenv("CORRAL_HARNESS_COMPACT_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="compact_threshold"):
        Settings()
