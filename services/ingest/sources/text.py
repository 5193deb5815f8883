"""Plain text from the HTML that platforms and feeds publish (Mastodon statuses, RSS and
Atom summaries, Hacker News comments): paragraphs and line breaks kept, entities decoded,
tags dropped. The standard library's HTML parser only: no markup is ever rendered."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCKS = ("p", "li", "blockquote", "pre", "div", "h1", "h2", "h3", "h4", "h5", "h6", "tr")


class _Text(HTMLParser):
    """HTML to plain text: block elements end a paragraph, ``<br>`` a line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            # Hacker News separates paragraphs with a bare <p> and never closes them.
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
