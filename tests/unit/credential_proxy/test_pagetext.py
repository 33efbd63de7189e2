"""HTML turned into text for web_fetch, and the max_content_tokens cut."""

from __future__ import annotations

from corral.credential_proxy.pagetext import CHARS_PER_TOKEN, html_to_text, media_type_of, truncate_to_tokens
from corral.credential_proxy.webdomains import domain_problem, url_allowed

PAGE = b"""<!doctype html><html><head><title>Otter facts</title><style>p{color:red}</style>
<script>var secret = "do-not-show";</script></head>
<body><nav><a href="/about">About</a></nav><h1>Otters</h1>
<p>Otters <b>hold hands</b> while sleeping.</p><ul><li>sea otter</li><li>river otter</li></ul>
<noscript>enable javascript</noscript></body></html>"""


def test_html_becomes_markdown_with_title_and_absolute_links() -> None:
    page = html_to_text(PAGE, "https://example.com/animals/otters.html")
    assert page.title == "Otter facts"
    assert "# Otters" in page.text
    assert "**hold hands**" in page.text
    assert "- sea otter" in page.text and "- river otter" in page.text
    assert "[About](https://example.com/about)" in page.text


def test_scripts_styles_and_head_are_dropped() -> None:
    text = html_to_text(PAGE, "https://example.com/").text
    for hidden in ("do-not-show", "color:red", "enable javascript", "Otter facts"):
        assert hidden not in text


def test_the_declared_charset_is_used() -> None:
    body = "<html><body><p>caf\u00e9</p></body></html>".encode("latin-1")
    assert html_to_text(body, "http://example.com/", "iso-8859-1").text == "caf\u00e9"


def test_media_type_and_charset_from_content_type() -> None:
    assert media_type_of('Text/HTML; charset="UTF-8"') == ("text/html", "UTF-8")
    assert media_type_of(None) == ("", None)


def test_text_within_the_limit_is_kept_whole() -> None:
    assert truncate_to_tokens("short text", 100) == ("short text", None)
    assert truncate_to_tokens("x" * 10_000, None) == ("x" * 10_000, None)


def test_longer_text_is_cut_at_a_word_break_with_a_note() -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    cut, note = truncate_to_tokens(text, 50)
    assert len(cut) <= 50 * CHARS_PER_TOKEN
    assert len(cut) > 50 * CHARS_PER_TOKEN * 0.8
    assert text.startswith(cut) and not cut.endswith(" ")
    assert text[len(cut)] == " "  # cut at a break, not inside a word
    assert note is not None and "max_content_tokens (50 tokens)" in note and f"{len(text)} characters" in note


def test_domains_match_subdomains_not_lookalikes() -> None:
    assert domain_problem("docs.example.com", "/", ["example.com"], None) is None
    assert domain_problem("example.com", "/", ["example.com"], None) is None
    assert "allowed_domains" in (domain_problem("badexample.com", "/", ["example.com"], None) or "")
    assert "blocked_domains" in (domain_problem("ads.example.com", "/", None, ["ads.example.com"]) or "")
    assert domain_problem("example.org", "/", None, ["example.com"]) is None


def test_search_domains_may_name_a_path() -> None:
    assert url_allowed("https://example.com/docs/intro", ["example.com/docs"], None)
    assert not url_allowed("https://example.com/blog/x", ["example.com/docs"], None)
    assert not url_allowed("https://example.com/docsearch", ["example.com/docs"], None)
    assert not url_allowed("not a url", None, None)
