"""Request bodies: strings that are not valid Unicode are a 400 naming where they are."""

from __future__ import annotations

import pytest

from corral.contracts.api.errors import ApiError
from corral.gateway.body import parse_json_object


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
