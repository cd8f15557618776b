"""Reading the HTML report's page in tests without a browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def metrics(text: str) -> dict[str, int]:
    found = re.findall(r'data-metric="(\w+)"><span class="value">([\d,]+)</span>', text)
    return {name: int(value.replace(",", "")) for name, value in found}


def section(text: str, ident: str) -> str:
    start = text.index(f'id="{ident}"')
    end = text.find('<section id="', start)
    return text[start:] if end < 0 else text[start:end]
