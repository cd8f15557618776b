"""News articles as leases see them: typed, immutable, aware timestamps."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import msgpack
import pytest

from streamwarden.marketdata import News, parse_news

MOMENT = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def test_a_msgpack_article_becomes_an_immutable_news():
    stamp = msgpack.Timestamp.from_datetime(MOMENT)
    article = parse_news({"T": "n", "id": 24918784, "headline": "Apple beats", "summary": "s",
                          "author": "Benzinga Newsdesk", "created_at": stamp,
                          "updated_at": "2026-11-23T15:31:00Z", "url": "https://e.com/a",
                          "content": "<p>body</p>", "symbols": ["AAPL", "MSFT"],
                          "source": "benzinga"})
    assert article == News(id=24918784, headline="Apple beats", summary="s",
                           author="Benzinga Newsdesk", source="benzinga", url="https://e.com/a",
                           symbols=("AAPL", "MSFT"), created_at=MOMENT,
                           updated_at=MOMENT.replace(minute=31), content="<p>body</p>")
    with pytest.raises(dataclasses.FrozenInstanceError):
        article.headline = "changed"  # type: ignore[misc]


def test_optional_fields_default_to_empty():
    article = parse_news({"T": "n", "id": "7", "headline": "H", "created_at": MOMENT,
                          "updated_at": MOMENT, "symbols": None, "url": ""})
    assert (article.id, article.symbols, article.url, article.summary, article.content) == (
        7, (), None, "", "")


@pytest.mark.parametrize(("message", "error"), [
    ({"T": "q", "S": "AAPL"}, "not a news message"),
    ({"T": "n", "headline": "H", "created_at": MOMENT, "updated_at": MOMENT}, "without 'id'"),
    ({"T": "n", "id": 1, "headline": "H", "updated_at": MOMENT}, "without 'created_at'"),
    ({"T": "n", "id": None, "headline": "H", "created_at": MOMENT, "updated_at": MOMENT},
     "unreadable field"),
    ({"T": "n", "id": 1, "headline": "H", "created_at": 5, "updated_at": MOMENT},
     "unreadable timestamp"),
])
def test_malformed_articles_are_refused(message, error):
    with pytest.raises(ValueError, match=error):
        parse_news(message)
