"""Content blocks: what a message, a tool result or an agent's reply is made of (section 5), and the
sources an image or a document is given by. Session events (``corral.contracts.api.events``) carry
them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from corral.contracts.api.base import Request


class Base64Source(Request):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(Request):
    type: Literal["url"]
    url: str


class FileSource(Request):
    type: Literal["file"]
    file_id: str


class PlainTextSource(Request):
    type: Literal["text"]
    media_type: Literal["text/plain"] = "text/plain"
    data: str


ImageSource = Annotated[Base64Source | UrlSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[Base64Source | UrlSource | FileSource | PlainTextSource, Field(discriminator="type")]


class TextBlock(Request):
    type: Literal["text"]
    text: str


class ImageBlock(Request):
    type: Literal["image"]
    source: ImageSource


class DocumentBlock(Request):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class RedactedBlock(Request):
    type: Literal["redacted"]


class SearchResultCitations(Request):
    enabled: bool


class SearchResultBlock(Request):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]
    citations: SearchResultCitations | None = None


UserContent = Annotated[TextBlock | ImageBlock | DocumentBlock | RedactedBlock, Field(discriminator="type")]
ToolResultContent = Annotated[TextBlock | ImageBlock | DocumentBlock | SearchResultBlock, Field(discriminator="type")]
AgentContent = Annotated[TextBlock | RedactedBlock, Field(discriminator="type")]
