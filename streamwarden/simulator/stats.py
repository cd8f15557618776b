"""Snapshots of what the simulator has seen and sent, for tests and operators.

Every class here is an immutable value taken under the simulator's lock: reading one never
races with the server. Key ids appear (tests need to know who connected); secrets never do,
because the simulator never keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

StreamKind = Literal["market_data", "trade_updates", "crypto_data", "option_data", "news"]
MARKET_DATA: StreamKind = "market_data"
TRADE_UPDATES: StreamKind = "trade_updates"
CRYPTO_DATA: StreamKind = "crypto_data"
OPTION_DATA: StreamKind = "option_data"
NEWS: StreamKind = "news"
STREAM_KINDS: tuple[StreamKind, ...] = (MARKET_DATA, TRADE_UPDATES, CRYPTO_DATA, OPTION_DATA,
                                        NEWS)

AuthOutcome = Literal["authorized", "auth_failed", "connection_limit", "insufficient_scope"]


@dataclass(frozen=True)
class ConnectionStats:
    """One client connection.

    Attributes:
        id: the simulator's number for the connection, from 1, in order of opening.
        kind: ``market_data``, ``trade_updates``, ``crypto_data``, ``option_data`` or ``news``.
        path: the request path (``/v2/iex``, ``/stream``, ``/v1beta3/crypto/us``, ...).
        is_open: the socket is still open on the server side.
        authenticated: the connection passed auth.
        key_id: the key id of its last auth attempt, ``None`` before any.
        subscription: market data: channel (``trades``, ``quotes``, ``bars``, ...) to the
            symbols subscribed on the wire, ``*`` included; trade updates: ``{"streams": ...}``.
            Channels with nothing subscribed are left out.
        data_messages: quotes, trades, bars or trade updates sent on it.
        control_messages: greetings, acks and errors sent on it.
        dropped: the server aborted it (``drop_after`` or ``drop_connections``).
        hung: the server left the client's close frame unanswered (``hang_on_close``).
    """

    id: int
    kind: StreamKind
    path: str
    is_open: bool
    authenticated: bool
    key_id: str | None
    subscription: Mapping[str, frozenset[str]]
    data_messages: int
    control_messages: int
    dropped: bool
    hung: bool

    def symbols(self, channel: str) -> frozenset[str]:
        """The symbols subscribed on ``channel`` (empty when none)."""
        return self.subscription.get(channel, frozenset())


@dataclass(frozen=True)
class AuthAttempt:
    """One authentication message received: who (key id only) and how it ended."""

    connection_id: int
    kind: StreamKind
    key_id: str | None
    outcome: AuthOutcome


@dataclass(frozen=True)
class ErrorSent:
    """An error the simulator sent: Alpaca's code for market data, 0 for the trading stream."""

    connection_id: int
    kind: StreamKind
    code: int
    message: str


@dataclass(frozen=True)
class KindStats:
    """Totals for one stream kind since the simulator started.

    Attributes:
        opened: connections accepted (WebSocket handshake completed).
        open: connections open now.
        auth_attempts: auth messages received.
        authorized: auth attempts that succeeded.
        data_messages: data messages sent.
        drops: connections the server aborted.
    """

    opened: int = 0
    open: int = 0
    auth_attempts: int = 0
    authorized: int = 0
    data_messages: int = 0
    drops: int = 0


@dataclass(frozen=True)
class SimulatorStats:
    """Everything observable at one instant.

    Attributes:
        kinds: totals per stream kind.
        connections: every open connection and the most recent closed ones (up to the
            simulator's history bound), in order of opening.
        auth_attempts: the most recent auth attempts, oldest first.
        errors: the most recent errors sent, oldest first.
    """

    kinds: Mapping[StreamKind, KindStats]
    connections: tuple[ConnectionStats, ...] = ()
    auth_attempts: tuple[AuthAttempt, ...] = ()
    errors: tuple[ErrorSent, ...] = field(default=())

    def kind(self, kind: StreamKind) -> KindStats:
        """The totals of ``kind``."""
        return self.kinds[kind]

    def open_connections(self, kind: StreamKind) -> tuple[ConnectionStats, ...]:
        """The open connections of ``kind``."""
        return tuple(c for c in self.connections if c.kind == kind and c.is_open)

    def wire_subscription(self, channel: str, kind: StreamKind = MARKET_DATA) -> frozenset[str]:
        """The union over open connections of ``kind`` (default stock market data) of the
        symbols on ``channel``."""
        symbols: set[str] = set()
        for connection in self.open_connections(kind):
            symbols |= connection.symbols(channel)
        return frozenset(symbols)

    def error_codes(self, kind: StreamKind = MARKET_DATA) -> tuple[int, ...]:
        """The codes of the recorded errors sent on ``kind``, oldest first."""
        return tuple(e.code for e in self.errors if e.kind == kind)
