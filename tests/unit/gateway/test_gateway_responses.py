"""The API's JSON responses (encoded by pydantic-core) say what the standard library's ``json`` says."""

from __future__ import annotations

import json
import math

from corral.gateway.responses import ApiJSONResponse

VALUE = {
    "id": "sesn_01X",
    "title": 'café ☕ \u2028 "quoted" \\ back',
    "metadata": {"k": "v"},
    "numbers": [0, -1, 1.5, 1e-05, 1e16, 2**63],
    "flags": [True, False, None],
    "nested": {"list": [{"a": []}, {}]},
}


def test_same_json_as_the_standard_library() -> None:
    body = ApiJSONResponse(VALUE).body
    assert json.loads(body) == VALUE
    assert body.decode().startswith('{"id":"sesn_01X","title":"café ☕')  # compact, UTF-8, order kept


def test_nan_and_infinity_are_written_null() -> None:
    assert json.loads(ApiJSONResponse({"a": math.nan, "b": [math.inf]}).body) == {"a": None, "b": [None]}


def test_media_type_is_json() -> None:
    assert ApiJSONResponse({}).media_type == "application/json"
