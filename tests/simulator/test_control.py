"""The control interface: HTTP requests on the simulator's port publish to real alpaca-py
clients, drop connections and read stats; bad, foreign and browser requests change nothing."""

from __future__ import annotations

import inspect
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from alpaca.trading.enums import TradeEvent
from websockets.sync.client import connect

from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Simulator, SimulatorError
from streamwarden.simulator._control import ACTIONS, CONTROL_HEADER, is_loopback
from tests.simulator.conftest import (
    BOUND,
    KEY_ID,
    SECRET,
    Received,
    SdkRunner,
    non_loopback_address,
    wait_connected,
)

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def control(url: str, *, header: bool = True, method: str = "GET") -> tuple[int, Any]:
    """A raw control request: the HTTP status and the decoded JSON answer."""
    headers = {CONTROL_HEADER: "1"} if header else {}
    data = b"" if method != "GET" else None
    request = urllib.request.Request(url, headers=headers, method=method, data=data)
    try:
        with NO_PROXY.open(request, timeout=BOUND) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        return exc.code, json.loads(exc.read())


def test_actions_take_the_simulator_methods_keyword_arguments() -> None:
    for name, action in ACTIONS.items():
        parameters = inspect.signature(getattr(Simulator, action.method)).parameters
        if action.answer is None:
            assert (name, action.parameters) == ("stats", ())
            continue
        keywords = {p for p in parameters if p not in ("self", "timeout", "timestamp")}
        assert set(action.parameters) == keywords, name
        required = {p for p in keywords if parameters[p].default is inspect.Parameter.empty}
        assert set(action.required) == required, name
        assert action.whole <= keywords
        assert all("int" in str(parameters[p].annotation) for p in action.whole), name


def test_market_data_published_over_http_reaches_the_sdk(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.market_data(), Received()
    stream.subscribe_quotes(received.handle, "AAPL")
    stream.subscribe_trades(received.handle, "AAPL")
    stream.subscribe_bars(received.handle, "AAPL")
    sdk.run(stream)
    wait_connected(sim, MARKET_DATA, channel="bars")
    base = f"{sim.control_url}/control"

    assert control(f"{base}/quote?symbol=AAPL&bid_price=187.20&ask_price=187.22&bid_size=3"
                   ) == (200, {"sent_to": 1})
    assert control(f"{base}/trade?symbol=AAPL&price=187.21&size=5&trade_id=42"
                   ) == (200, {"sent_to": 1})
    assert control(f"{base}/bar?symbol=AAPL&open_price=187.1&high_price=187.5&low_price=187"
                   f"&close_price=187.25&volume=1200&vwap=187.2") == (200, {"sent_to": 1})
    assert control(f"{base}/quote?symbol=MSFT&bid_price=1&ask_price=2") == (200, {"sent_to": 0})
    quote, trade, bar = received.wait(3)

    assert (quote.symbol, quote.bid_price, quote.ask_price, quote.bid_size) == (
        "AAPL", 187.2, 187.22, 3)
    assert (trade.price, trade.size, trade.id) == (187.21, 5, 42)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.vwap) == (
        187.1, 187.5, 187.0, 187.25, 1200, 187.2)


def test_trade_update_published_over_http_reaches_the_sdk(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.trading(), Received()
    stream.subscribe_trade_updates(received.handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")
    order_id = str(uuid.uuid4())

    assert control(f"{sim.control_url}/control/trade_update?event=partial_fill&symbol=MSFT"
                   f"&side=sell&qty=4&price=410.50&order_id={order_id}"
                   f"&client_order_id=momentum-1") == (200, {"sent_to": 1})
    (update,) = received.wait(1)

    assert (update.event, update.price, update.qty) == (TradeEvent.PARTIAL_FILL, 410.5, 2)
    assert (str(update.order.id), update.order.client_order_id) == (order_id, "momentum-1")
    assert (update.order.symbol, update.order.side) == ("MSFT", "sell")


def test_drop_and_stats(sim: Simulator, sdk: SdkRunner) -> None:
    stream = sdk.market_data()
    stream.subscribe_quotes(Received().handle, "AAPL", "MSFT")
    sdk.run(stream)
    wait_connected(sim, MARKET_DATA, channel="quotes")
    base = f"{sim.control_url}/control"

    status, stats = control(f"{base}/stats")
    assert status == 200
    assert (stats["quote_rate"], stats["faults"]) == (0.0, "none")
    assert stats["kinds"][MARKET_DATA]["open"] == 1
    (connection,) = stats["open_connections"]
    assert (connection["kind"], connection["path"], connection["key_id"]) == (
        MARKET_DATA, "/v2/iex", KEY_ID)
    assert connection["authenticated"] is True
    assert connection["subscription"]["quotes"] == ["AAPL", "MSFT"]
    assert SECRET not in json.dumps(stats)

    assert control(f"{base}/drop?kind=trade_updates") == (200, {"dropped": 0})
    assert control(f"{base}/drop") == (200, {"dropped": 1})
    assert sim.stats().kind(MARKET_DATA).drops == 1


BAD_REQUESTS = [
    ("trade_update?event=fill&symbol=AAPL", 400, "a fill event needs a price"),
    ("trade_update?event=teleport&price=1", 400, "teleport"),
    ("trade_update?order_id=not-a-uuid&price=1", 400, "bad trade update"),
    ("trade_update?price=1&side=short", 400, "side must be 'buy' or 'sell'"),
    ("trade_update?price=-1", 400, "price must be positive"),
    ("trade_update?price=1&price=2", 400, "price given twice"),
    ("trade_update?price=1&colour=red", 400, "trade_update takes event, symbol"),
    ("trade_update?price", 400, "malformed query string"),
    ("quote?symbol=AAPL&bid_price=1", 400, "quote needs ask_price"),
    ("quote?symbol=AAPL&bid_price=x&ask_price=2", 400, "bid_price must be a number"),
    ("quote?symbol=AAPL&bid_price=1&ask_price=2&bid_size=1.5", 400,
     "bid_size must be a whole number in 0..9223372036854775807, got '1.5'"),
    ("trade?symbol=AAPL&price=1&trade_id=9223372036854775808", 400,
     "trade_id must be a whole number in 0..9223372036854775807, got '9223372036854775808'"),
    ("trade?symbol=AAPL&price=1&size=-1", 400, "size must be a whole number in 0.."),
    ("bar?symbol=AAPL&open_price=1&high_price=2&low_price=3&close_price=1&volume=1", 400,
     "low <= open, close <= high"),
    ("drop?kind=everything", 400, "kind must be one of"),
    ("stats?verbose=1", 400, "stats takes no parameters"),
    ("fill?price=1", 404, "no control action 'fill'; the actions are quote, trade, bar, "
                          "trade_update, crypto_quote, crypto_trade, option_quote, option_trade, "
                          "news, drop, mute, unmute, stats"),
]


def test_bad_requests_are_refused_and_publish_nothing(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.trading(), Received()
    stream.subscribe_trade_updates(received.handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")
    base = f"{sim.control_url}/control"

    for path, status, reason in BAD_REQUESTS:
        code, answer = control(f"{base}/{path}")
        assert (code, list(answer)) == (status, ["error"]), path
        assert reason in answer["error"], path
    assert control(f"{base}/trade_update?price=1&client_order_id=after",
                   header=False)[0] == 403
    assert control(f"{base}/trade_update?price=1&client_order_id=after",
                   method="POST") == (405, {"error": "control requests are GET, not POST"})
    assert control(f"{base}/trade_update?price=1&client_order_id=good") == (200, {"sent_to": 1})

    (update,) = received.wait(1)
    assert update.order.client_order_id == "good"
    assert sim.stats().kind(TRADE_UPDATES).data_messages == 1


def test_a_request_without_the_control_header_is_refused(sim: Simulator) -> None:
    # A web page can make the browser send a GET anywhere, but not with a custom header.
    assert control(f"{sim.control_url}/control/stats", header=False) == (
        403, {"error": f"control requests need the header {CONTROL_HEADER}"})


def test_other_paths_still_get_404(sim: Simulator) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        NO_PROXY.open(f"{sim.control_url}/controls", timeout=BOUND)
    assert refused.value.code == 404
    assert b"no such stream" in refused.value.read()


def test_answers_over_ipv6_loopback() -> None:
    with Simulator(host="::1") as sim:
        assert sim.control_url == f"http://[::1]:{sim.port}"
        assert control(f"{sim.control_url}/control/drop") == (200, {"dropped": 0})


def test_peers_not_on_loopback_are_refused_but_get_the_streams() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    with Simulator(host="0.0.0.0") as sim:
        status, answer = control(f"http://{address}:{sim.port}/control/stats")
        assert (status, answer) == (403, {"error": "control requests are answered only from "
                                                   "loopback"})
        with connect(f"ws://{address}:{sim.port}/stream", open_timeout=BOUND) as ws:
            ws.send(json.dumps({"action": "authenticate",
                                "data": {"key_id": KEY_ID, "secret_key": SECRET}}))
            assert json.loads(ws.recv(BOUND))["data"]["status"] == "authorized"
        assert control(f"http://127.0.0.1:{sim.port}/control/stats")[0] == 200


@pytest.mark.parametrize(("address", "loopback"), [
    (("127.0.0.1", 5), True), (("127.8.9.10", 5), True), (("::1", 5, 0, 0), True),
    (("::ffff:127.0.0.1", 5, 0, 0), True), (("192.0.2.2", 5), False),
    (("::ffff:192.0.2.2", 5, 0, 0), False), (("fd00::2", 5, 0, 0), False),
    (("localhost", 5), False), ((), False), (None, False),
])
def test_is_loopback(address: object, loopback: bool) -> None:
    assert is_loopback(address) is loopback


class _StoppingSimulator(Simulator):
    """A simulator whose publish reports that it could not finish in time.

    For real this takes a client that stops reading until the socket buffers on both sides are
    full (megabytes of quotes) and then the five-second bound; the answer it gets is all that is
    tested here.
    """

    def drop_connections(self, kind: Any = MARKET_DATA, timeout: float = 5.0) -> int:
        raise SimulatorError("not done within 5 s", operation="simulator.drop_connections")


def test_a_simulator_that_cannot_finish_answers_503() -> None:
    with _StoppingSimulator() as sim:
        assert control(f"{sim.control_url}/control/drop") == (
            503, {"error": "not done within 5 s"})


def test_control_url_needs_a_started_simulator() -> None:
    with pytest.raises(SimulatorError, match="has not started"):
        _ = Simulator().control_url
