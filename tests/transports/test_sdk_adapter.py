"""The alpaca-py internals streamwarden relies on are still there.

If this fails after an alpaca-py upgrade, the SDK changed under ``streamwarden/transports/
_sdk_adapter.py``: read the new SDK source, adapt that module (and only it), then widen the pin
in pyproject.toml. (A test about the adapter itself, so it imports the private modules.)
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest

from streamwarden.transports import _sdk_adapter as sdk_adapter
from streamwarden.transports._alpaca import fatal_error
from streamwarden.transports._sdk_adapter import (
    SDK_INSTANCE_ATTRIBUTES,
    SDK_INTERNALS,
    AdaptedStockDataStream,
    AdaptedTradingStream,
    acknowledged,
    error_code,
)

TESTED_RANGE = ((0, 43), (0, 44))


class _Events:
    def __init__(self) -> None:
        self.data: list[object] = []
        self.failed: list[tuple[object, Exception]] = []

    def on_ready(self, pairs: frozenset[tuple[str, str]]) -> None: ...
    def on_stream_error(self, code: int | None, message: str) -> bool: return False
    def on_data(self, message: object) -> None:
        if message == {"T": "q"}:
            raise ValueError("unreadable")
        self.data.append(message)

    def on_message_failed(self, message: object, error: Exception) -> None:
        self.failed.append((message, error))


async def _ignore(update: object) -> None:
    """A trade-updates handler."""


def test_alpaca_py_is_a_tested_version():
    major, minor = (int(part) for part in version("alpaca-py").split(".")[:2])
    assert TESTED_RANGE[0] <= (major, minor) <= TESTED_RANGE[1], (
        f"alpaca-py {version('alpaca-py')} is outside the tested range; see this module's doc")


@pytest.mark.parametrize(("cls", "name"), SDK_INTERNALS,
                         ids=[f"{cls.__name__}.{name}" for cls, name in SDK_INTERNALS])
def test_sdk_internal_exists_and_is_a_coroutine(cls, name):
    member = getattr(cls, name, None)
    assert member is not None, f"alpaca-py no longer has {cls.__name__}.{name}"
    assert inspect.iscoroutinefunction(member), f"{cls.__name__}.{name} is no longer async"


def test_sdk_instance_attributes_exist_on_adapted_streams():
    params = {"close_timeout": 1}
    market = AdaptedStockDataStream("PKTEST", "secret", feed="iex", url="ws://127.0.0.1:9/v2/iex",
                                    websocket_params=params, events=_Events())
    trading = AdaptedTradingStream("PKTEST", "secret", paper=True, url=None,
                                   websocket_params=params, events=_Events(), on_update=_ignore)
    for name in SDK_INSTANCE_ATTRIBUTES:
        assert hasattr(market, name) or hasattr(trading, name), f"alpaca-py dropped {name}"
    assert set(market._handlers) >= {"quotes", "trades", "bars"}
    assert market._endpoint == "ws://127.0.0.1:9/v2/iex"
    assert trading._endpoint.startswith("wss://paper-api.alpaca.markets")
    assert trading._trade_updates_handler is _ignore
    assert not sdk_adapter.is_connected(market) and sdk_adapter.registered(market) == set()


def test_the_sdk_error_texts_map_to_alpaca_codes_and_typed_errors():
    assert [error_code(text) for text in ("auth failed", " Not Authenticated ",
                                           "failed to authenticate", "symbol limit exceeded",
                                           "connection limit exceeded",
                                           "insufficient subscription", "slow client")] == [
        402, 401, 402, 405, 406, 409, None]
    assert [type(fatal_error(code, "x")).__name__ for code in (401, 402, 405, 406, 409)] == [
        "AuthenticationError", "AuthenticationError", "SubscriptionError",
        "ConnectionLimitError", "SubscriptionError"]
    assert fatal_error(None, "connected message not received") is None


def test_a_subscription_message_names_the_pairs_the_wire_carries():
    message = {"T": "subscription", "trades": ["AAPL"], "quotes": ["AAPL", "MSFT"],
               "bars": [], "updatedBars": ["SPY"], "dailyBars": None}
    assert acknowledged(message) == {("quotes", "AAPL"), ("quotes", "MSFT"), ("trades", "AAPL"),
                                     ("updated_bars", "SPY")}
    assert acknowledged({"T": "subscription"}) == frozenset()


def test_adapted_crypto_option_and_news_streams_use_alpacas_endpoints_and_channels():
    params = {"close_timeout": 1}
    crypto = sdk_adapter.AdaptedCryptoDataStream("PKTEST", "secret", url=None,
                                                 websocket_params=params, events=_Events())
    opra = sdk_adapter.AdaptedOptionDataStream("PKTEST", "secret", feed="opra", url=None,
                                               websocket_params=params, events=_Events())
    news = sdk_adapter.AdaptedNewsDataStream("PKTEST", "secret", url="ws://127.0.0.1:9/n",
                                             websocket_params=params, events=_Events())
    assert crypto._endpoint == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    assert opra._endpoint == "wss://stream.data.alpaca.markets/v1beta1/opra"
    assert news._endpoint == "ws://127.0.0.1:9/n"
    assert {"quotes", "trades", "bars"} <= set(crypto._handlers)
    assert {"quotes", "trades"} <= set(opra._handlers) and "news" in news._handlers
    for stream in (crypto, opra, news):
        for name in SDK_INSTANCE_ATTRIBUTES:
            if name != "_trade_updates_handler":
                assert hasattr(stream, name), f"alpaca-py dropped {name}"
        assert not sdk_adapter.is_connected(stream) and sdk_adapter.registered(stream) == set()
    assert sorted(acknowledged({"T": "subscription", "news": ["*", "AAPL"]})) == [
        ("news", "*"), ("news", "AAPL")]


def test_a_news_article_naming_several_subscribed_symbols_is_handed_over_once():
    import asyncio  # noqa: PLC0415

    events = _Events()
    news = sdk_adapter.AdaptedNewsDataStream("PKTEST", "secret", url="ws://127.0.0.1:9/n",
                                             websocket_params={}, events=events)

    async def scenario() -> None:
        await sdk_adapter.subscribe(news, {("news", "AAPL"), ("news", "TSLA")})
        await news._dispatch({"T": "n", "id": 1, "symbols": ["AAPL", "TSLA"]})

    asyncio.run(scenario())
    assert events.data == [{"T": "n", "id": 1, "symbols": ["AAPL", "TSLA"]}]
    assert sdk_adapter.registered(news) == {("news", "AAPL"), ("news", "TSLA")}


def test_data_goes_to_on_data_a_failure_to_on_message_failed_and_the_rest_to_the_sdk():
    import asyncio  # noqa: PLC0415

    events = _Events()
    market = sdk_adapter.AdaptedStockDataStream("PKTEST", "secret", feed="iex",
                                                url="ws://127.0.0.1:9/v2/iex",
                                                websocket_params={}, events=events)

    async def scenario() -> None:
        await sdk_adapter.subscribe(market, {("quotes", "AAPL")})
        for message in ({"T": "q", "S": "MSFT"}, {"T": "q"}, {"T": "success", "msg": "x"}):
            await market._dispatch(message)

    asyncio.run(scenario())
    # Every data message, subscribed or not: routing decides who gets it.
    assert events.data == [{"T": "q", "S": "MSFT"}]
    assert [(message, str(error)) for message, error in events.failed] == [
        ({"T": "q"}, "unreadable")]
