"""Well-formed text: lone surrogates found and replaced, everything else (NUL included) kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.contracts.text import has_lone_surrogate, well_formed

ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None))


def test_lone_surrogates_are_found_at_any_depth() -> None:
    assert has_lone_surrogate({"a": [1, {"b": "x\ud800"}]})
    assert has_lone_surrogate({"\udc00": 1})
    assert not has_lone_surrogate({"a": ["\x00", "🙂", None, 2.5]})


@given(ANY_TEXT)
def test_well_formed_text_encodes_and_keeps_every_other_character(text: str) -> None:
    fixed = well_formed(text)
    fixed.encode()
    assert not has_lone_surrogate(fixed)
    assert len(fixed) == len(text)
    assert all(a == b for a, b in zip(text, fixed, strict=True) if not 0xD800 <= ord(a) <= 0xDFFF)


def test_well_formed_keeps_the_shape_of_json_values() -> None:
    assert well_formed({"k\ud800": ["\udfff", 1, None]}) == {"k\ufffd": ["\ufffd", 1, None]}
