"""The transport protocol: what the manager needs from a WebSocket connection.

A transport owns one physical connection (its socket and the thread that runs it). The manager
starts and stops it from the lifecycle's supervisor thread, never while holding its own lock,
and changes subscriptions while holding its lock (so the wire follows the order of leases). The
transport reports back through a :class:`TransportListener`, from any thread, possibly from
inside :meth:`Transport.start`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import ConnectionStartError
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.market_data import Subscription


@dataclass(frozen=True)
class StreamMessage:
    """One message from the stream: its channel (quotes, trades, bars, trade_updates), the
    symbol it concerns (if any) and the payload, parsed once (a Quote, Trade or Bar of
    :mod:`streamwarden.machine.market_data`, or the SDK's TradeUpdate)."""

    channel: str
    symbol: str | None
    payload: Any


class TransportListener(Protocol):
    """Callbacks from a transport to the manager. Thread-safe; may be called from any thread."""

    def on_connected(self) -> None:
        """Authenticated and subscribed: the stream is usable (again, after a reconnect)."""
        ...

    def on_connection_lost(self, reason: str) -> None:
        """The socket closed or failed while the stream was usable; the transport reconnects."""
        ...

    def on_fatal_error(self, error: ConnectionStartError) -> None:
        """The stream cannot be (re)established, e.g. refused credentials; the transport has
        stopped retrying. ``error``'s message must hold no secret."""
        ...

    def on_message(self, message: StreamMessage) -> None:
        """A message arrived."""
        ...


class Transport(Protocol):
    """One physical connection to an Alpaca stream."""

    def start(self, listener: TransportListener) -> None:
        """Begin connecting and return without waiting for the connection.

        Called at most once. Events are reported to ``listener``.
        """
        ...

    def stop(self, timeout: float) -> bool:
        """Close the socket and join the transport's thread, waiting at most ``timeout`` seconds.

        Returns:
            True if the thread finished in time, False if it was abandoned.

        May be called before :meth:`start` or more than once; later calls return at once.
        """
        ...

    def subscribe(self, subscriptions: Collection[Subscription]) -> None:
        """Add (channel, symbol) pairs to the wire subscription. Must not block.

        May be called before :meth:`start`: the transport subscribes them once connected.
        """
        ...

    def unsubscribe(self, subscriptions: Collection[Subscription]) -> None:
        """Remove (channel, symbol) pairs from the wire subscription. Must not block."""
        ...

    @property
    def socket_open(self) -> bool:
        """Whether the socket is open."""
        ...

    @property
    def thread_alive(self) -> bool:
        """Whether the transport's thread is running (False before start and after a join)."""
        ...

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The (channel, symbol) pairs subscribed on the wire (requested, for a queued change)."""
        ...


TransportFactory = Callable[[StreamKey, Credentials, Settings], Transport]
"""Builds the transport for a new lifecycle of ``StreamKey``."""
