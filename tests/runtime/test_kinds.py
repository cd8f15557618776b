"""Crypto, option and news streams end to end: the real alpaca-py SDK against the simulator.

Each kind has its own stream key and lifecycle; leases of one kind and account share one
socket, each receives its own symbols, the wire carries their union (INV6), a release
unsubscribes what nobody else wants, and the audit trail records acquire and release with the
kind.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.simulator import CRYPTO_DATA, NEWS, OPTION_DATA, Faults, Simulator
from tests.cli_run import run
from tests.runtime.conftest import BOUND, sim_settings

pytestmark = pytest.mark.timeout(60)

CALL = "AAPL241220C00150000"
PUT = "SPY241220P00500000"


def kind_settings(sim: Simulator, *, option_feed: str = "indicative") -> sw.Settings:
    """Settings pointing every kind at ``sim`` (the option URL named by ``option_feed``; either
    feed's URL serves both)."""
    return sim_settings(sim, crypto_data_url=sim.crypto_data_url,
                        option_data_url=sim.option_data_url(option_feed), news_url=sim.news_url,
                        debug=True)


def kind_records(sink: sw.InMemoryAuditSink, kind: str, event: str) -> list[sw.AuditRecord]:
    return [r for r in sink.records() if r.kind == kind and r.event == event]


def test_crypto_leases_share_one_socket_with_their_own_pairs(sim, creds, sink):
    with sw.ConnectionManager(settings=kind_settings(sim), audit=sink) as manager:
        with manager.crypto_data(creds, symbols=["BTC/USD"], owner="a") as first, \
                manager.crypto_data(creds, symbols=["eth/usd", "BTC/USD"], owner="b") as second:
            assert first.lifecycle_id == second.lifecycle_id
            assert (first.key.kind, first.key.feed) == ("crypto_data", "us")
            stats = sim.wait_for(lambda s: s.wire_subscription("quotes", CRYPTO_DATA)
                                 == {"BTC/USD", "ETH/USD"}, BOUND)
            (connection,) = stats.open_connections(CRYPTO_DATA)
            assert connection.path == "/v1beta3/crypto/us"
            assert stats.kind(CRYPTO_DATA).opened == 1
            assert stats.wire_subscription("quotes") == frozenset()  # no stock socket

            sim.publish_crypto_quote("BTC/USD", bid_price="67000.5", ask_price="67001.25",
                                     bid_size="0.125", ask_size="1.5")
            quote = first.wait_for_quote("BTC/USD", BOUND)
            assert (quote.bid_price, quote.ask_price) == (Decimal("67000.5"), Decimal("67001.25"))
            assert (quote.bid_size, quote.ask_size) == (Decimal("0.125"), Decimal("1.5"))
            assert quote.timestamp.utcoffset() is not None
            assert second.wait_for_quote("BTC/USD", BOUND) == quote

            sim.publish_crypto_trade("ETH/USD", price="3500.75", size="0.02", trade_id=7)
            trade = next(second.trades(BOUND))
            assert (trade.symbol, trade.price, trade.size, trade.trade_id) == (
                "ETH/USD", Decimal("3500.75"), Decimal("0.02"), 7)
            with pytest.raises(sw.InvalidInputError):
                first.latest_trade("ETH/USD")  # not its pair

            second.subscribe_bars("ETH/USD")
            sim.publish_crypto_bar("ETH/USD", open_price=3500, high_price=3510, low_price=3490,
                                   close_price="3505.5", volume=12)
            bar = next(second.bars(BOUND))
            assert (bar.close, bar.volume) == (Decimal("3505.5"), Decimal(12))
            assert manager.check_invariants() == []

            second.release()
            sim.wait_for(lambda s: s.wire_subscription("quotes", CRYPTO_DATA) == {"BTC/USD"}
                         and s.wire_subscription("bars", CRYPTO_DATA) == frozenset(), BOUND)
            assert manager.check_invariants() == []
        sim.wait_for(lambda s: not s.open_connections(CRYPTO_DATA), BOUND)
    acquires = kind_records(sink, "crypto_data", "acquire")
    assert [r.owner for r in acquires] == ["a", "b"]
    assert acquires[1].details["subscriptions"] == {"quotes": ["BTC/USD", "ETH/USD"],
                                                    "trades": ["BTC/USD", "ETH/USD"]}
    assert len(kind_records(sink, "crypto_data", "release")) == 2


def test_option_leases_share_one_msgpack_socket_per_feed(sim, creds, sink):
    with sw.ConnectionManager(settings=kind_settings(sim), audit=sink) as manager:
        with manager.option_data(creds, symbols=[CALL]) as first, \
                manager.option_data(creds, symbols=[PUT], feed="indicative") as second:
            assert first.lifecycle_id == second.lifecycle_id
            assert (first.key.kind, first.key.feed) == ("option_data", "indicative")
            stats = sim.wait_for(lambda s: s.wire_subscription("trades", OPTION_DATA)
                                 == {CALL, PUT}, BOUND)
            (connection,) = stats.open_connections(OPTION_DATA)
            assert connection.path == "/v1beta1/indicative"

            sim.publish_option_quote(CALL, bid_price="4.15", ask_price="4.25", bid_size=3,
                                     ask_size=5)
            sim.publish_option_trade(PUT, price="12.05", size=2)
            quote = first.wait_for_quote(CALL, BOUND)
            assert (quote.symbol, quote.bid_price, quote.ask_size) == (
                CALL, Decimal("4.15"), Decimal(5))
            assert quote.timestamp.tzinfo is not None
            trade = next(second.trades(BOUND))
            assert (trade.symbol, trade.price) == (PUT, Decimal("12.05"))
            with pytest.raises(sw.InvalidInputError, match="channel"):
                first.subscribe_bars(CALL)  # Alpaca's option stream has no bars
            with pytest.raises(sw.InvalidInputError, match="option symbol"):
                first.subscribe_quotes("AAPL")

            first.release()
            sim.wait_for(lambda s: s.wire_subscription("quotes", OPTION_DATA) == {PUT}, BOUND)
            assert manager.check_invariants() == []
        assert len(kind_records(sink, "option_data", "release")) == 2


def test_each_option_feed_is_its_own_stream_key(sim, creds):
    settings = kind_settings(sim, option_feed="opra")
    with sw.ConnectionManager(settings=settings, audit=sw.InMemoryAuditSink()) as manager, \
            manager.option_data(creds, symbols=[CALL], feed="opra") as opra, \
            manager.option_data(creds, symbols=[CALL]) as indicative:
        assert opra.key.feed == "opra" and indicative.key.feed == "indicative"
        assert opra.lifecycle_id != indicative.lifecycle_id
        stats = sim.wait_for(lambda s: len(s.open_connections(OPTION_DATA)) == 2, BOUND)
        assert {c.path for c in stats.open_connections(OPTION_DATA)} == {
            "/v1beta1/opra", "/v1beta1/indicative"}  # one override serves both feeds


def test_news_goes_once_to_each_lease_that_wants_it(sim, creds, sink):
    received: list[sw.News] = []
    arrived = threading.Event()

    def on_news(article: sw.News) -> None:
        received.append(article)
        arrived.set()

    with sw.ConnectionManager(settings=kind_settings(sim), audit=sink) as manager:
        with manager.news(creds, symbols=["*"], owner="desk") as everything, \
                manager.news(creds, symbols=["AAPL", "TSLA"], on_news=on_news) as pair:
            assert everything.lifecycle_id == pair.lifecycle_id
            assert (everything.key.kind, everything.key.feed) == ("news", None)
            assert pair.symbols == {"AAPL", "TSLA"}
            stats = sim.wait_for(lambda s: s.wire_subscription("news", NEWS)
                                 == {"*", "AAPL", "TSLA"}, BOUND)
            assert len(stats.open_connections(NEWS)) == 1

            sim.publish_news("Apple and Tesla", symbols=["AAPL", "TSLA"], summary="both",
                             url="https://example.com/a", article_id=11)
            sim.publish_news("Rates unchanged", symbols=[], article_id=12)
            articles = everything.news(BOUND)
            first, second = next(articles), next(articles)
            assert (first.id, first.headline, first.symbols) == (11, "Apple and Tesla",
                                                                 ("AAPL", "TSLA"))
            assert (first.summary, first.url) == ("both", "https://example.com/a")
            assert first.created_at.tzinfo is not None and first.updated_at.utcoffset() == \
                UTC.utcoffset(None)
            assert second.id == 12
            assert arrived.wait(BOUND)
            assert [a.id for a in received] == [11]  # once, though it names both symbols
            assert manager.check_invariants() == []
        sim.wait_for(lambda s: not s.open_connections(NEWS), BOUND)
    assert [r.owner for r in kind_records(sink, "news", "acquire")] == ["desk", None]
    assert kind_records(sink, "news", "acquire")[0].details["subscriptions"] == {"news": ["*"]}
    assert len(kind_records(sink, "news", "release")) == 2


@pytest.mark.parametrize(("call", "match"), [
    (lambda m, c: m.crypto_data(c, symbols=[]), "at least one symbol"),
    (lambda m, c: m.crypto_data(c, symbols="BTC/USD"), "single string"),
    (lambda m, c: m.option_data(c, symbols=[CALL], feed="sip"), "feed must be one of"),
    (lambda m, c: m.option_data(c, symbols=["AAPL"]), "malformed option symbol"),
    (lambda m, c: m.option_data(c, symbols=[]), "at least one symbol"),
    (lambda m, c: m.option_data(c, symbols=CALL), "single string"),
    (lambda m, c: m.option_data(c, symbols=[42]), "must be a string"),
    (lambda m, c: m.news(c, symbols=[]), "at least one symbol"),
    (lambda m, c: m.news(c, symbols=["*"], on_news="print"), "callable"),
])
def test_bad_input_is_refused_and_changes_nothing(sim, creds, sink, call, match):
    with sw.ConnectionManager(settings=kind_settings(sim), audit=sink) as manager:
        with pytest.raises(sw.InvalidInputError, match=match):
            call(manager, creds)
        assert manager.health().lifecycles == ()
        assert sink.records() == ()
    assert sim.stats().kind(CRYPTO_DATA).opened == 0


@pytest.mark.parametrize(("faults", "error"), [
    (Faults(auth_failure=True), sw.AuthenticationError),
    (Faults(symbol_limit=True), sw.SubscriptionError),
], ids=["auth-402", "symbols-405"])
@pytest.mark.parametrize("kind", [CRYPTO_DATA, OPTION_DATA, NEWS])
def test_a_refusal_ends_each_kinds_lifecycle_with_its_typed_error(  # noqa: PLR0917
        sim, creds, sink, faults, error, kind):
    sim.set_faults(faults)
    acquire = {CRYPTO_DATA: lambda m: m.crypto_data(creds, symbols=["BTC/USD"]),
               OPTION_DATA: lambda m: m.option_data(creds, symbols=[CALL]),
               NEWS: lambda m: m.news(creds, symbols=["*"])}[kind]
    with sw.ConnectionManager(settings=kind_settings(sim), audit=sink) as manager:
        with pytest.raises(error):
            acquire(manager)
        assert kind_records(sink, kind, "start_failed")
        sim.wait_for(lambda s: s.kind(kind).open == 0, BOUND)
        assert manager.check_invariants() == []


async def _next(iterator: AsyncIterator[Any]) -> Any:
    async with asyncio.timeout(BOUND):
        return await anext(iterator)


def test_async_twin_serves_every_kind(sim, creds, sink):
    async def scenario() -> None:
        async with sw.AsyncConnectionManager(audit=sink, settings=kind_settings(sim)) as manager, \
                manager.crypto_data(creds, symbols=["BTC/USD"]) as crypto, \
                manager.option_data(creds, symbols=[CALL]) as option, \
                manager.news(creds, symbols=["*"]) as news:
            assert isinstance(crypto, sw.AsyncMarketDataLease)
            assert isinstance(news, sw.AsyncNewsLease)
            assert len({crypto.lifecycle_id, option.lifecycle_id, news.lifecycle_id}) == 3
            await asyncio.to_thread(sim.publish_crypto_quote, "BTC/USD", bid_price=1,
                                    ask_price=2, bid_size="0.5")
            await asyncio.to_thread(sim.publish_option_trade, CALL, price="3.5")
            await asyncio.to_thread(sim.publish_news, "Hello", symbols=["MSFT"])
            quote = await _next(crypto.quotes())
            assert quote.bid_size == Decimal("0.5")
            trade = await _next(option.trades())
            assert trade.price == Decimal("3.5")
            article = await _next(news.news())
            assert article.headline == "Hello" and article.symbols == ("MSFT",)
            assert await manager.check_invariants() == []
            kinds = {lc.kind for lc in (await manager.health()).lifecycles}
            assert kinds == {"crypto_data", "option_data", "news"}

    asyncio.run(scenario())
    released = {r.kind for r in sink.records() if r.event == "release"}
    assert released == {"crypto_data", "option_data", "news"}


def test_audit_holders_and_report_show_the_new_kinds_leases(sim, creds, tmp_path, capsys):
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    with sw.AuditLog.open(db_url) as log, \
            sw.ConnectionManager(settings=kind_settings(sim), audit=log) as manager, \
            manager.crypto_data(creds, symbols=["BTC/USD"], owner="crypto-desk"), \
            manager.news(creds, symbols=["*"], owner="news-desk"):
        held_at = datetime.now(UTC).isoformat()
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", held_at,
                         "--format", "json")
    rows = {row["owner"]: row for row in json.loads(out)}
    assert status == 0 and set(rows) == {"crypto-desk", "news-desk"}
    assert rows["crypto-desk"]["kind"] == "crypto_data"
    assert rows["crypto-desk"]["receives"] == "quotes BTC/USD; trades BTC/USD"
    assert (rows["news-desk"]["kind"], rows["news-desk"]["receives"]) == ("news", "news *")
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--kind", "news",
                         "--event", "acquire", "--format", "json")
    assert status == 0
    assert [(r["kind"], r["owner"]) for r in json.loads(out)] == [("news", "news-desk")]
