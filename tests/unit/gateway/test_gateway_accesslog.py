"""The access log keeps the API's own query parameters and redacts every other value."""

from __future__ import annotations

import logging

import pytest

from corral.gateway.accesslog import RedactQuery, redact_target


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/v1/agents", "/v1/agents"),
        ("/v1/agents?api_key=sk-1&limit=5", "/v1/agents?api_key=[redacted]&limit=5"),
        ("/v1/sessions?statuses%5B%5D=idle&token=t", "/v1/sessions?statuses[]=idle&token=[redacted]"),
        ("/v1/agents?%zz&&=", "/v1/agents?[redacted]"),  # does not parse: all of it goes
    ],
)
def test_unknown_parameters_values_are_redacted(target: str, logged: str) -> None:
    assert redact_target(target) == logged


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    args = ("127.0.0.1:5", "GET", "/v1/agents?key=sk-secret", "1.1", 401)
    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)
    assert RedactQuery().filter(record)
    assert "sk-secret" not in record.getMessage() and "key=[redacted]" in record.getMessage()
