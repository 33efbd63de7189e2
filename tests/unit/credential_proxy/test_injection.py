"""Substituting credentials' placeholders: only theirs, only where their injection location allows."""

from __future__ import annotations

from corral.credential_proxy.injection import Injection, substitute_body, substitute_header_value, substitute_headers

HEADER_ONLY = Injection("vcrd_1", "corral-placeholder-aaa", "s3cret-header", header=True, body=False)
BODY_ONLY = Injection("vcrd_2", "corral-placeholder-bbb", "s3cret-body", header=False, body=True)


def test_a_header_value_gets_the_secret_of_a_header_credential_only() -> None:
    headers = [
        (b"Authorization", b"Bearer corral-placeholder-aaa"),
        (b"X-Both", b"corral-placeholder-aaa:corral-placeholder-bbb"),
        (b"corral-placeholder-aaa", b"name untouched"),
    ]
    assert substitute_headers(headers, [HEADER_ONLY, BODY_ONLY]) == [
        (b"Authorization", b"Bearer s3cret-header"),
        (b"X-Both", b"s3cret-header:corral-placeholder-bbb"),
        (b"corral-placeholder-aaa", b"name untouched"),
    ]


def test_a_body_gets_the_secret_of_a_body_credential_only() -> None:
    body = b'{"a": "corral-placeholder-aaa", "b": "corral-placeholder-bbb", "c": "corral-placeholder-bbb"}'
    assert substitute_body(body, [HEADER_ONLY, BODY_ONLY]) == (
        b'{"a": "corral-placeholder-aaa", "b": "s3cret-body", "c": "s3cret-body"}'
    )


def test_a_placeholder_of_another_credential_or_no_credential_at_all_is_left_as_sent() -> None:
    value = b"Bearer corral-placeholder-zzz"
    assert substitute_header_value(value, [HEADER_ONLY]) == value
    assert substitute_header_value(b"Bearer corral-placeholder-aaa", []) == b"Bearer corral-placeholder-aaa"


def test_a_value_that_would_break_the_header_framing_is_not_put_in_a_header() -> None:
    evil = Injection("vcrd_3", "corral-placeholder-ccc", "x\r\nX-Injected: 1", header=True, body=True)
    assert substitute_header_value(b"corral-placeholder-ccc", [evil]) == b"corral-placeholder-ccc"
    assert substitute_body(b"corral-placeholder-ccc", [evil]) == b"x\r\nX-Injected: 1"


def test_the_value_is_never_in_the_repr() -> None:
    assert "s3cret" not in repr(HEADER_ONLY)
