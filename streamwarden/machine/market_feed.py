"""Market-data operations on live leases: subscription changes, latest values, waits.

A subscription change is a lease event: it is recorded (``lease_subscribed`` /
``lease_unsubscribed``) before it takes effect, so a failed audit write changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection

from streamwarden.audit.records import LEASE_SUBSCRIBED, LEASE_UNSUBSCRIBED
from streamwarden.errors import InvalidInputError
from streamwarden.machine.connection import Connection
from streamwarden.machine.core import ManagerCore
from streamwarden.machine.keys import MARKET_DATA
from streamwarden.machine.leases import Callback, Lease
from streamwarden.machine.market_data import CHANNELS, MarketData, Subscription
from streamwarden.validation import check_seconds, check_symbols


def check_callbacks(required: bool = False, **by_channel: object) -> dict[str, Callback]:
    """The callbacks given, by channel (None ones left out unless ``required``).

    Raises:
        InvalidInputError: a callback is not callable.
    """
    callbacks: dict[str, Callback] = {}
    for channel, callback in by_channel.items():
        if callback is None and not required:
            continue
        if not callable(callback):
            raise InvalidInputError(f"the {channel} callback must be callable",
                                    operation="acquire")
        callbacks[channel] = callback
    return callbacks


def describe(subscriptions: Collection[Subscription]) -> dict[str, list[str]]:
    """``{channel: [symbols]}``, sorted: how subscriptions are shown in audit details.

    >>> describe({("trades", "MSFT"), ("quotes", "MSFT"), ("quotes", "AAPL")})
    {'quotes': ['AAPL', 'MSFT'], 'trades': ['MSFT']}
    """
    by_channel: dict[str, list[str]] = {}
    for channel, symbol in sorted(subscriptions):
        by_channel.setdefault(channel, []).append(symbol)
    return by_channel


def _check_channel(channel: object) -> str:
    if channel not in CHANNELS:
        raise InvalidInputError(f"channel must be one of {', '.join(CHANNELS)}; got {channel!r}")
    assert isinstance(channel, str)
    return channel


def _check_symbol(symbol: object) -> str:
    (checked,) = check_symbols([symbol])
    return checked


class MarketFeed:
    """What a market-data lease does besides acquire and release.

    Thread-safety: every method may be called from any thread; each takes the manager's lock.
    """

    def __init__(self, core: ManagerCore) -> None:
        self._core = core

    def _live_connection(self, lease: Lease) -> Connection:
        """``lease``'s connection. Call with the lock held.

        Raises:
            LeaseRevokedError / LeaseError: the lease is no longer live.
            InvalidInputError: the lease is not a market-data lease.
        """
        lease.ensure_live()
        if lease.info.key.kind != MARKET_DATA:
            raise InvalidInputError("only market-data leases subscribe symbols",
                                    operation="subscribe", correlation_id=lease.correlation_id)
        return self._core.active[lease.lifecycle_id]

    def change(self, lease: Lease, channel: str, symbols: object, *, subscribe: bool) -> None:
        """Add ``symbols`` of ``channel`` to ``lease``'s subscriptions, or remove them.

        Raises:
            InvalidInputError: bad channel or symbols, or not a market-data lease.
            LeaseRevokedError / LeaseError: the lease is no longer live.
            AuditError: the change could not be recorded; nothing changed.
        """
        channel = _check_channel(channel)
        pairs = {(channel, symbol) for symbol in check_symbols(symbols)}
        with self._core.cond:
            connection = self._live_connection(lease)
            changed = pairs - lease.subscriptions if subscribe else pairs & lease.subscriptions
            if not changed:
                return
            event = LEASE_SUBSCRIBED if subscribe else LEASE_UNSUBSCRIBED
            connection.record_lease_event(event, lease,
                                          details={"subscriptions": describe(changed)})
            if subscribe:
                lease.subscriptions = lease.subscriptions | changed
                connection.fanout.add(lease, changed)
            else:
                lease.subscriptions = lease.subscriptions - changed
                connection.fanout.remove(lease, changed)

    def _pair(self, lease: Lease, channel: str, symbol: object) -> Subscription:
        pair = (channel, _check_symbol(symbol))
        if pair not in lease.subscriptions:
            raise InvalidInputError(f"this lease does not subscribe {channel} of {pair[1]}",
                                    operation=channel, correlation_id=lease.correlation_id)
        return pair

    def latest(self, lease: Lease, channel: str, symbol: object) -> MarketData | None:
        """The latest message of (``channel``, ``symbol``), or None.

        Raises:
            InvalidInputError: ``lease`` does not subscribe it.
            LeaseRevokedError / LeaseError: the lease is no longer live.
        """
        with self._core.cond:
            connection = self._live_connection(lease)
            return connection.fanout.latest(self._pair(lease, channel, symbol))

    def wait(self, lease: Lease, channel: str, symbol: object, timeout: float) -> MarketData:
        """The latest message of (``channel``, ``symbol``), waiting up to ``timeout`` seconds.

        Raises:
            InvalidInputError: ``lease`` does not subscribe it, or a bad timeout.
            TimeoutError: nothing arrived in time.
            LeaseRevokedError / LeaseError: the lease was or became no longer live.
        """
        seconds = check_seconds("timeout", timeout)
        core = self._core
        with core.cond:
            connection = self._live_connection(lease)
            pair = self._pair(lease, channel, symbol)
            connection.market_data_waiters += 1
            try:
                core.cond.wait_for(
                    lambda: not lease.is_live or connection.fanout.latest(pair) is not None,
                    timeout=seconds,
                )
            finally:
                connection.market_data_waiters -= 1
            lease.ensure_live()
            latest = connection.fanout.latest(pair)
            if latest is None:
                raise TimeoutError(f"no {channel} of {pair[1]} within {seconds}s")
            return latest
