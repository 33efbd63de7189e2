"""Request bodies: strings that are not valid Unicode are a 400 naming where they are; metadata over
the limits is ``invalid_metadata``."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from corral.contracts.api.agents import AgentCreateParams
from corral.contracts.api.environments import EnvironmentUpdateParams
from corral.contracts.api.errors import ApiError
from corral.contracts.api.event_params import SendEventsParams
from corral.contracts.api.sessions import SessionUpdateParams
from corral.gateway.body import parse_json_object, validate


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (rb'{"a":"x\ud800"}', "a:"),
        (rb'{"a":[1,{"b":"\udc00"}]}', "a.1.b:"),
        (rb'{"a":"\udc00\ud800"}', "a:"),  # a low one before a high one is no pair
        (rb'{"\ud800":1}', "\\ud800"),
    ],
)
def test_an_unpaired_surrogate_escape_is_a_400_naming_the_field(raw: bytes, where: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_json_object(raw)
    assert raised.value.status == 400
    assert where in raised.value.message and "surrogate" in raised.value.message


def test_paired_surrogates_and_escaped_backslashes_are_fine() -> None:
    assert parse_json_object(rb'{"a":"\ud83d\ude00"}') == {"a": "\U0001f600"}
    assert parse_json_object(rb'{"a":"\\ud800"}') == {"a": "\\ud800"}
    assert parse_json_object('\ufeff{"a":"é"}'.encode()) == {"a": "é"}


def test_a_body_that_is_not_utf8_is_a_400() -> None:
    for raw in (b'{"a":"\xed\xa0\x80"}', b'{"a":"\xff"}'):  # an encoded surrogate; a stray byte
        with pytest.raises(ApiError) as raised:
            parse_json_object(raw)
        assert raised.value.status == 400 and "UTF-8" in raised.value.message


_LONG_KEY = ({"k" * 65: "v"}, "65 characters; keys are at most 64")
_EMPTY_KEY = ({"": "v"}, "keys cannot be empty")
_LONG_VALUE = ({"k": "v" * 513}, "'k' is 513 characters; values are at most 512")
_TOO_MANY = ({f"k{i}": "v" for i in range(17)}, "17 keys; at most 16")  # a patch: checked once merged


@pytest.mark.parametrize(
    ("model", "case"),
    [
        *[(AgentCreateParams, case) for case in (_TOO_MANY, _LONG_KEY, _EMPTY_KEY, _LONG_VALUE)],
        *[
            (model, case)
            for model in (EnvironmentUpdateParams, SessionUpdateParams)
            for case in (_LONG_KEY, _LONG_VALUE)
        ],
    ],
)
def test_metadata_over_the_limits_is_invalid_metadata_naming_the_problem(
    model: type[BaseModel], case: tuple[dict[str, str], str]
) -> None:
    metadata, mention = case
    data: dict[str, object] = {"metadata": metadata}
    if model is AgentCreateParams:
        data |= {"name": "a", "model": "m"}
    with pytest.raises(ApiError) as raised:
        validate(model, data)
    assert (raised.value.status, raised.value.error_code) == (400, "invalid_metadata")
    assert raised.value.message.startswith("metadata: ") and mention in raised.value.message


def test_metadata_with_another_error_is_a_plain_400() -> None:
    with pytest.raises(ApiError) as raised:
        validate(AgentCreateParams, {"name": "a", "model": "m", "bogus": 1, "metadata": {"": "v"}})
    assert raised.value.error_code is None and "bogus" in raised.value.message


@pytest.mark.parametrize(
    "event",
    [
        {"type": "user.define_outcome", "description": "d", "rubric": {"type": "text", "content": "r"}},
        {"type": "system.message", "content": [{"type": "text", "text": "t"}]},
    ],
)
def test_events_of_features_not_built_yet_pass_the_shape_check_for_the_store_to_answer(
    event: dict[str, object],
) -> None:
    assert validate(SendEventsParams, {"events": [event]}).events[0].type == event["type"]
