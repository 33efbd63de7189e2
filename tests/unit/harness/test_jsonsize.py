"""``ConversationBuilder.chars()``: the length of the conversation's JSON, kept as the fold grows,
equals ``len(json.dumps(messages()))`` for any log, at every step, after any compaction record and
after a snapshot restore (the request's size is estimated from it, so a compaction decides the same
as if the whole request were encoded again at every step)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.harness.conversation import ConversationBuilder
from corral.harness.fold import SessionFold, decode
from corral.harness.jsonsize import Sized, messages_chars, sized
from tests.unit.harness.test_fold import logs, restored, with_compaction


def encoded(builder: ConversationBuilder) -> int:
    return len(json.dumps(builder.messages()))


@settings(max_examples=120, deadline=None)
@given(
    prefix=logs(),
    suffix=logs(),
    pick=st.integers(min_value=0, max_value=40),
    cut=st.integers(min_value=0, max_value=42),
    max_result_chars=st.sampled_from([None, 1]),
)
def test_chars_is_the_length_of_the_conversations_json_at_every_step(
    prefix: list[dict[str, Any]], suffix: list[dict[str, Any]], pick: int, cut: int, max_result_chars: int | None
) -> None:
    _, data = with_compaction(prefix, suffix, pick, max_result_chars=max_result_chars, summary="S é \u2603")

    fold = SessionFold.empty(max_result_chars=max_result_chars)
    for seq, value in enumerate(data, start=1):
        fold.apply(decode(seq, value))
        assert fold.conversation.chars() == encoded(fold.conversation), f"after record {seq}"
        if seq == cut:
            again = restored(fold, max_result_chars=max_result_chars)
            assert again.conversation.chars() == encoded(again.conversation), "after a restore"
            fold = again
    assert fold.conversation.copy().chars() == encoded(fold.conversation)


@given(
    messages=st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), st.lists(st.text(max_size=5), min_size=0, max_size=3)),
        max_size=8,
    ),
    split=st.tuples(st.integers(0, 8), st.integers(0, 8)),
)
def test_messages_chars_merges_neighbours_of_the_same_role_like_the_conversation(
    messages: list[tuple[str, list[str]]], split: tuple[int, int]
) -> None:
    """Head and tail may merge into the middle's ends; the middle alternates (as placed messages do)."""
    as_blocks = [(role, [{"type": "text", "text": t} for t in texts]) for role, texts in messages]
    low, high = sorted(split)
    head, middle, tail = as_blocks[:low], as_blocks[low:high], as_blocks[high:]
    alternating: list[tuple[str, list[dict[str, str]]]] = []
    for role, content in middle:
        if alternating and alternating[-1][0] == role:
            alternating[-1] = (role, [*alternating[-1][1], *content])
        else:
            alternating.append((role, content))
    merged: list[dict[str, Any]] = []
    for role, content in [*head, *alternating, *tail]:
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"] = [*merged[-1]["content"], *content]
        else:
            merged.append({"role": role, "content": list(content)})
    middle_sized: list[Sized] = [sized(role, content) for role, content in alternating]
    assert messages_chars(
        [sized(r, c) for r, c in head],
        middle_sized,
        sum(m.chars for m in middle_sized),
        [sized(r, c) for r, c in tail],
    ) == len(json.dumps(merged))
