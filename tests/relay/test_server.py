"""The relay's server in this process, on the test's own event loop, against the simulator:
each protocol path one client frame at a time (raw WebSocket clients, MessagePack and JSON),
every message type's wire form, a news lease replaced on change, the trading stream's
listen/unlisten, a full send queue cut with 407, refusals audited."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from streamwarden import AsyncConnectionManager, Credentials, InMemoryAuditSink, Settings
from streamwarden._redaction import SecretRedactor
from streamwarden.logging import make_logger
from streamwarden.relay._auth import Authenticator, token_digest
from streamwarden.relay._server import RelayOptions, RelayServer
from streamwarden.simulator import Simulator
from tests.relay.conftest import BOUND, UPSTREAM_KEY, UPSTREAM_SECRET

pytestmark = pytest.mark.timeout(60)

UPSTREAM = Credentials(UPSTREAM_KEY, UPSTREAM_SECRET)
MOMENT = datetime(2026, 11, 30, 15, 0, 1, 250000, tzinfo=UTC)
MSGPACK = {"Content-Type": "application/msgpack"}
Body = Callable[[str, InMemoryAuditSink], Awaitable[None]]


def run_relay(sim: Simulator, body: Body, *, queue_size: int = 1000,
              **overrides: Any) -> InMemoryAuditSink:
    settings = Settings(**overrides,
        market_data_url=sim.market_data_url, trade_updates_url=sim.trade_updates_url,
        crypto_data_url=sim.crypto_data_url, option_data_url=sim.option_data_url(),
        news_url=sim.news_url, trading_api_url=sim.trading_api_url, stop_timeout=1.0,
        start_timeout=10.0, conflate_quotes=False)
    sink = InMemoryAuditSink()

    async def scenario() -> None:
        async with AsyncConnectionManager(audit=sink, settings=settings) as manager:
            server = RelayServer(
                manager, UPSTREAM,
                authenticator=Authenticator(UPSTREAM, {"bot": token_digest("bot-token")}),
                audit=sink, log=make_logger(SecretRedactor()),
                options=RelayOptions(port=0, queue_size=queue_size, auth_timeout=1.0,
                                     close_timeout=0.5))
            await server.start()
            try:
                await asyncio.wait_for(body(f"ws://127.0.0.1:{server.port}", sink), BOUND * 2)
            finally:
                await server.stop()

    asyncio.run(scenario())
    return sink


async def receive(ws: ClientConnection, codec: str = "json") -> Any:
    frame = await asyncio.wait_for(ws.recv(), BOUND)
    return msgpack.unpackb(frame, timestamp=3) if codec == "msgpack" else json.loads(frame)


async def send(ws: ClientConnection, message: dict[str, Any], codec: str = "json") -> None:
    await ws.send(msgpack.packb(message) if codec == "msgpack" else json.dumps(message))


async def login(ws: ClientConnection, codec: str = "json", key: str = "bot",
                secret: str = "bot-token") -> None:
    assert (await receive(ws, codec))[0]["msg"] == "connected"
    await send(ws, {"action": "auth", "key": key, "secret": secret}, codec)
    assert (await receive(ws, codec))[0]["msg"] == "authenticated"


async def until(condition: Callable[[], bool]) -> None:
    """Until ``condition`` holds (what the server does after a client left), within BOUND."""
    deadline = asyncio.get_running_loop().time() + BOUND
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def publish(call: Callable[[], object]) -> None:
    await asyncio.to_thread(call)


def test_every_market_data_message_in_its_wire_form(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v2/iex", additional_headers=MSGPACK) as ws:
            await login(ws, "msgpack")
            await send(ws, {"action": "subscribe", "quotes": ["AAPL"], "trades": ["AAPL"],
                            "bars": ["AAPL"], "updatedBars": ["AAPL"], "dailyBars": ["AAPL"],
                            "statuses": ["AAPL"]}, "msgpack")
            ack = (await receive(ws, "msgpack"))[0]
            assert ack["T"] == "subscription" and ack["cancelErrors"] == ["AAPL"]
            await publish(lambda: sim.publish_raw([
                {"T": "q", "S": "AAPL", "bp": 1.5, "bs": 2, "ap": 1.75, "as": 3, "t": MOMENT},
                {"T": "t", "S": "AAPL", "p": 1.6, "s": 0.5, "i": 7, "t": MOMENT},
                {"T": "b", "S": "AAPL", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 10, "t": MOMENT},
                {"T": "u", "S": "AAPL", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 11, "t": MOMENT},
                {"T": "d", "S": "AAPL", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 12, "t": MOMENT},
                {"T": "s", "S": "AAPL", "sc": "H", "sm": "Halted", "rc": "T1", "rm": "News",
                 "t": MOMENT},
                {"T": "c", "S": "AAPL", "oi": 7, "op": 1.6, "os": 1, "ci": 8, "cp": 1.65,
                 "cs": 1, "t": MOMENT},
                {"T": "x", "S": "AAPL", "i": 8, "p": 1.65, "s": 1, "a": "C", "t": MOMENT},
            ]))
            got: list[dict[str, Any]] = []
            while len(got) < 8:
                got += await receive(ws, "msgpack")
        by_type = {message["T"]: message for message in got}
        assert by_type["q"] == {"T": "q", "S": "AAPL", "bp": 1.5, "bs": 2, "ap": 1.75, "as": 3,
                                "t": MOMENT}
        assert by_type["t"] == {"T": "t", "S": "AAPL", "p": 1.6, "s": 0.5, "i": 7, "t": MOMENT}
        assert {by_type[t]["v"] for t in "bud"} == {10, 11, 12}
        assert by_type["s"]["sc"] == "H" and by_type["s"]["rm"] == "News"
        assert (by_type["c"]["oi"], by_type["c"]["cp"]) == (7, 1.65)
        assert (by_type["x"]["i"], by_type["x"]["a"]) == (8, "C")
        await until(lambda: [record.event for record in sink.records()
                             if record.owner == "bot"][-1] == "release")  # the client left

    run_relay(sim, body)


def test_json_unsubscribe_everything_releases_the_lease(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v2/iex") as ws:
            await login(ws, key=UPSTREAM_KEY, secret=UPSTREAM_SECRET)
            await send(ws, {"action": "subscribe", "trades": ["MSFT"]})
            assert (await receive(ws))[0]["trades"] == ["MSFT"]
            await publish(lambda: sim.publish_trade("MSFT", price=10.5, trade_id=3,
                                                    timestamp=MOMENT))
            trade = (await receive(ws))[0]
            assert trade == {"T": "t", "S": "MSFT", "p": 10.5, "s": 1, "i": 3,
                             "t": "2026-11-30T15:00:01.250000Z"}
            await send(ws, {"action": "unsubscribe", "trades": ["MSFT"]})
            assert (await receive(ws))[0]["trades"] == []
            assert [r.event for r in sink.records() if r.lease_id][-1] == "release"
            await send(ws, {"action": "subscribe", "quotes": ["not a symbol"]})
            assert (await receive(ws))[0]["code"] == 400  # refused by the manager's checks
            await send(ws, {"action": "bogus"})
            assert (await receive(ws))[0]["code"] == 400

    run_relay(sim, body)


def test_news_lease_is_replaced_on_change_and_crypto_routes(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v1beta1/news") as ws:
            await login(ws)
            await send(ws, {"action": "subscribe", "news": ["AAPL"]})
            assert (await receive(ws))[0]["news"] == ["AAPL"]
            await send(ws, {"action": "subscribe", "news": ["TSLA"]})
            assert (await receive(ws))[0]["news"] == ["AAPL", "TSLA"]
            await publish(lambda: sim.publish_news("Tesla", symbols=["TSLA"],
                                                   timestamp=MOMENT))
            article = (await receive(ws))[0]
            assert (article["T"], article["headline"], article["symbols"]) == (
                "n", "Tesla", ["TSLA"])
            releases = [r for r in sink.records() if r.event == "release" and r.owner == "bot"]
            assert len(releases) == 1  # the AAPL-only lease, replaced
        async with connect(url + "/v1beta3/crypto/us") as ws:
            await login(ws)
            await send(ws, {"action": "subscribe", "lulds": ["BTC/USD"]})
            assert (await receive(ws))[0]["code"] == 410

    run_relay(sim, body)


def test_trading_stream_listen_and_unlisten(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/stream") as ws:
            await send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
            await send(ws, {"action": "auth", "key": "bot", "secret": "bot-token"})
            assert (await receive(ws))["data"] == {"status": "unauthorized", "action": "listen"}
            assert (await receive(ws))["data"]["status"] == "authorized"
            await send(ws, {"action": "listen", "data": {"streams": ["trade_updates"]}})
            assert (await receive(ws)) == {"stream": "listening",
                                           "data": {"streams": ["trade_updates"]}}
            await publish(lambda: sim.publish_trade_update("new", client_order_id="o-1"))
            update = await receive(ws)
            assert update["stream"] == "trade_updates"
            assert update["data"]["order"]["client_order_id"] == "o-1"
            await send(ws, {"action": "listen", "data": {"streams": []}})
            assert (await receive(ws))["data"] == {"streams": []}
            await send(ws, {"action": "nonsense"})
            assert (await receive(ws))["action"] == "error"
            with pytest.raises(ConnectionClosed):
                await receive(ws)
        async with connect(url + "/stream") as ws:
            await send(ws, {"action": "authenticate",
                            "data": {"key_id": UPSTREAM_KEY, "secret_key": "wrong"}})
            assert (await receive(ws))["data"]["status"] == "unauthorized"
            with pytest.raises(ConnectionClosed):
                await receive(ws)
        refused = [r for r in sink.records() if r.event == "relay_auth_refused"]
        assert len(refused) == 1 and refused[0].kind == "trade_updates"

    run_relay(sim, body)


def test_a_full_send_queue_cuts_the_client_with_407(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v2/iex") as ws:
            await login(ws)
            await send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
            await receive(ws)
            await publish(lambda: sim.publish_quotes("AAPL", 50, batch_size=50))
            frames = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(await receive(ws))
            assert frames[-1] == [{"T": "error", "code": 407, "msg": "slow client"}]
            assert sum(len(frame) for frame in frames[:-1]) < 50  # the queue was discarded

    run_relay(sim, body, queue_size=5)


def test_options_need_msgpack(sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v1beta1/opra") as ws:
            assert (await receive(ws))[0]["code"] == 412
            with pytest.raises(ConnectionClosed):
                await receive(ws)

    run_relay(sim, body)


def test_upstream_reconnects_keep_clients_and_a_failed_upstream_closes_them(
        sim: Simulator) -> None:
    async def body(url: str, sink: InMemoryAuditSink) -> None:
        async with connect(url + "/v2/iex") as ws:
            await login(ws)
            await send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
            await receive(ws)
            await publish(sim.drop_connections)  # the manager reconnects
            await publish(lambda: sim.wait_for(
                lambda stats: stats.kind("market_data").opened == 2
                and "AAPL" in stats.wire_subscription("quotes"), BOUND))
            await publish(lambda: sim.publish_quote("AAPL", bid_price=5, ask_price=6))
            assert (await receive(ws))[0]["bp"] == 5  # the client's socket stayed open
            await publish(lambda: sim.update_faults(auth_failure=True))
            await publish(sim.drop_connections)  # now the upstream cannot come back
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert any(record.error_type == "AuthenticationError" for record in sink.records())

    run_relay(sim, body, reconnect_grace=1.0, reconnect_backoff_initial=0.1,
              reconnect_backoff_max=0.2)
