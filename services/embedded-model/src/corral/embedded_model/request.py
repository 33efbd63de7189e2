"""The Messages API request, validated just enough, and the text the model reads from it."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator


class _Open(BaseModel):
    """Strict about the fields we read, tolerant of every field we do not."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)


class ContentBlockParam(_Open):
    """Any content block; only ``text`` and ``tool_use`` blocks have their shape checked."""

    type: str = Field(min_length=1)
    text: JsonValue = None
    content: JsonValue = None
    input: JsonValue = None

    @model_validator(mode="after")
    def _known_blocks_are_well_formed(self) -> ContentBlockParam:
        if self.type == "text" and not isinstance(self.text, str):
            raise ValueError("a text block needs a string `text`")
        if self.type == "tool_use" and not isinstance(self.input, dict):
            raise ValueError("a tool_use block needs an object `input`")
        return self

    @property
    def plain_text(self) -> str:
        """Readable text of the block: a text block's text or a tool result's text."""
        if self.type == "text" and isinstance(self.text, str):
            return self.text
        if self.type == "tool_result":
            return _tool_result_text(self.content)
        return ""

    @property
    def counted_text(self) -> str:
        """Everything that should count towards input tokens."""
        if self.type == "tool_use":
            return json.dumps(self.input)
        return self.plain_text


def _text_as_blocks(value: object) -> object:
    """Accept the string shorthand for content: ``"hi"`` means ``[{"type": "text", ...}]``."""
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class MessageParam(_Open):
    role: Literal["user", "assistant", "system"]
    content: list[ContentBlockParam]

    @field_validator("content", mode="before")
    @classmethod
    def _content_shorthand(cls, value: object) -> object:
        return _text_as_blocks(value)

    @property
    def plain_text(self) -> str:
        return "\n".join(text for block in self.content if (text := block.plain_text))


class MessagesRequest(_Open):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: list[ContentBlockParam] = Field(default_factory=list)
    stream: bool = False

    @field_validator("system", mode="before")
    @classmethod
    def _system_shorthand(cls, value: object) -> object:
        return _text_as_blocks(value)

    @property
    def turn_index(self) -> int:
        """Which scripted turn this request asks for: the number of assistant messages."""
        return sum(1 for message in self.messages if message.role == "assistant")

    @property
    def system_text(self) -> str:
        return "\n".join(text for block in self.system if (text := block.plain_text))

    @property
    def first_user_text(self) -> str:
        return next((m.plain_text for m in self.messages if m.role == "user"), "")

    @property
    def last_user_text(self) -> str:
        users = [m for m in self.messages if m.role == "user"]
        return users[-1].plain_text if users else ""

    @property
    def input_characters(self) -> int:
        """Total characters of all text in ``system`` and ``messages``."""
        total = sum(len(block.counted_text) for block in self.system)
        for message in self.messages:
            total += sum(len(block.counted_text) for block in message.content)
        return total


def _tool_result_text(content: JsonValue) -> str:
    """A tool result's content is a string or a list of blocks, of which text ones count."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [item.get("text") for item in content if isinstance(item, dict) and item.get("type") == "text"]
    return "\n".join(text for text in texts if isinstance(text, str))
