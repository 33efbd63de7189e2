"""Text that may hold any Unicode goes into Postgres and comes back unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from corral.session_store import pgtext

#: Every code point, lone surrogates and NUL included.
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))
BODIES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def storable(text: str) -> bool:
    """What Postgres text accepts: valid UTF-8 without NUL."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


@given(BODIES)
def test_a_body_is_stored_as_text_postgres_accepts_and_loads_back_equal(body: Any) -> None:
    text = pgtext.dump(body)
    assert storable(text)
    assert pgtext.load(text) == body


def test_nul_and_lone_surrogates_in_a_body_survive() -> None:
    body = {"text": "a\x00b", "lone": "\ud800x\udfff", "name\x00": ["\x00"]}
    text = pgtext.dump(body)
    assert storable(text) and pgtext.load(text) == body


def test_a_body_without_lone_surrogates_keeps_its_characters_unescaped() -> None:
    assert pgtext.dump({"t": "é漢🙂"}) == '{"t":"é漢🙂"}'


@given(ANY_TEXT, ANY_TEXT)
def test_a_key_is_storable_and_equal_only_for_equal_text(a: str, b: str) -> None:
    assert storable(pgtext.key(a))
    assert (pgtext.key(a) == pgtext.key(b)) == (a == b)


def test_keys_that_look_like_escapes_stay_distinct() -> None:
    texts = ["\x00", "\\0", "\\\x00", "\\\\0", "\ud800", "\\ud800", "\\u0000"]
    assert len({pgtext.key(t) for t in texts}) == len(texts)
    assert pgtext.key("plain name") == "plain name"
