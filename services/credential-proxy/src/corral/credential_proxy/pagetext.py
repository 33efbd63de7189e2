"""What a fetched body becomes for the model (pure): HTML turned into Markdown text, other text decoded,
and the text cut to ``max_content_tokens``.

HTML is converted with markdownify (on BeautifulSoup's ``html.parser``): headings, lists, tables,
emphasis and links survive as Markdown, so the model can read the structure and follow links, which
are made absolute against the page's URL. Scripts, styles, forms' chrome and other non-content
elements are dropped first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin

#: The estimate of characters per token used for ``max_content_tokens``.
CHARS_PER_TOKEN: Final = 4

HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
#: Media types returned as text besides ``text/*``.
TEXT_TYPES: Final = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/javascript",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
    }
)
PDF_TYPE: Final = "application/pdf"

_DROPPED: Final = ("script", "style", "noscript", "template", "svg", "iframe", "object", "embed", "head", "button")
_BLANK_LINES = re.compile(r"\n{3,}")


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in TEXT_TYPES or media_type.endswith(("+json", "+xml"))


def media_type_of(content_type: str | None) -> tuple[str, str | None]:
    """``(media type, charset)`` from a ``Content-Type`` header (lower case; ``""`` when absent)."""
    if not content_type:
        return "", None
    kind, *params = content_type.split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    return kind.strip().lower(), charset


def decode(body: bytes, charset: str | None) -> str:
    """Text in ``charset`` (UTF-8 when unknown or unknown to Python), undecodable bytes replaced."""
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Page:
    title: str | None
    text: str


def html_to_text(body: bytes | str, base_url: str, charset: str | None = None) -> Page:
    """The page's title and its content as Markdown, links absolute against ``base_url``."""
    from bs4 import BeautifulSoup  # the HTML parser and converter: loaded by the first page fetched
    from markdownify import MarkdownConverter

    if isinstance(body, bytes):
        soup = BeautifulSoup(body, "html.parser", from_encoding=charset)
    else:
        soup = BeautifulSoup(body, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title is not None else None
    for name in _DROPPED:
        for element in soup.find_all(name):
            element.decompose()
    for link in soup.find_all("a", href=True):
        link["href"] = urljoin(base_url, str(link["href"]))
    for image in soup.find_all("img", src=True):
        image["src"] = urljoin(base_url, str(image["src"]))
    text = MarkdownConverter(heading_style="ATX", bullets="-").convert_soup(soup)
    text = _BLANK_LINES.sub("\n\n", "\n".join(line.rstrip() for line in text.splitlines())).strip()
    return Page(title=title or None, text=text)


def truncate_to_tokens(text: str, max_tokens: int | None) -> tuple[str, str | None]:
    """``text`` cut to about ``max_tokens`` tokens (at a line or word break when one is near), and the
    note that says so (``None`` when nothing was cut)."""
    if max_tokens is None:
        return text, None
    limit = max_tokens * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text, None
    cut = text[:limit]
    for separator in ("\n", " "):
        at = cut.rfind(separator)
        if at >= limit * 0.8:
            cut = cut[:at]
            break
    total = -(-len(text) // CHARS_PER_TOKEN)
    note = (
        f"The content was truncated to max_content_tokens ({max_tokens} tokens): it has about {total} tokens "
        f"({len(text)} characters) and the first {len(cut)} characters are shown."
    )
    return cut.rstrip(), note
