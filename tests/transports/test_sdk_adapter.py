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
    def on_authenticated(self) -> None: ...
    def on_ready(self, pairs: frozenset[tuple[str, str]]) -> None: ...
    def on_stream_error(self, code: int | None, message: str) -> bool: return False
    def on_socket_lost(self, reason: str) -> None: ...


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
