"""An in-memory transport: connection events produced by the test, no socket, no thread.

It runs on the manager's engine loop like any transport; the ``emit_*`` methods may be called
from any thread and return once the engine loop has taken the event. With
``TransportOptions(hang_on_stop=True)`` it behaves like a peer that never finishes closing: its
``run`` ignores ``stop`` and the first cancellation, so the engine's stop bound runs out and the
transport is counted as abandoned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from streamwarden._keys import StreamKey
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import ConnectionStartError
from streamwarden.marketdata import Subscription
from streamwarden.transports._contract import (
    ConnectFailure,
    MalformedMessage,
    StreamMessage,
    TransportEvents,
)

#: Seconds an ``emit_*`` call waits for the engine loop to take its event.
EMIT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class TransportOptions:
    """How an in-memory transport behaves.

    Attributes:
        auto_connect: report ``connected`` as soon as it runs.
        fatal_error: report this error instead of connecting.
        connect_failure: report this failed attempt instead of connecting (and never connect
            by itself: the start times out with this cause unless the test emits ``connected``).
        hang_on_stop: never end after ``stop`` (until cancelled twice).
        auto_ack: acknowledge every subscription change at once while connected.
    """

    auto_connect: bool = True
    fatal_error: ConnectionStartError | None = None
    connect_failure: ConnectFailure | None = None
    hang_on_stop: bool = False
    auto_ack: bool = True


class InMemoryTransport:
    """A transport whose connection events are produced by the test.

    Thread-safety: ``emit_*`` and the properties may be used from any thread; the transport
    methods are called by the engine on its loop.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: TransportEvents | None = None
        self._stop = threading.Event()
        self._stop_signal: asyncio.Event | None = None
        self._started = False
        self._connected = False
        self._wire: frozenset[Subscription] = frozenset()
        self.reconnect_reasons: list[str] = []

    # Transport protocol (engine loop).

    async def run(self, events: TransportEvents) -> None:
        """Connect (or fail) now, then wait for ``stop``."""
        self._loop = asyncio.get_running_loop()
        self._events = events
        self._started = True
        self._stop_signal = asyncio.Event()
        if self._stop.is_set():
            return
        if self.options.fatal_error is not None:
            events.on_fatal_error(self.options.fatal_error)
        elif self.options.connect_failure is not None:
            events.on_connect_failed(self.options.connect_failure, 1, 0.0)
        elif self.options.auto_connect:
            self._connect()
        try:
            await self._stop_signal.wait()
        except asyncio.CancelledError:
            if not self.options.hang_on_stop:
                raise
            await asyncio.Event().wait()  # hung: only a second cancellation ends it
        finally:
            self._connected = False

    async def stop(self) -> None:
        """Close, unless hanging."""
        self._stop.set()
        self._connected = False
        if self._stop_signal is not None and not self.options.hang_on_stop:
            self._stop_signal.set()

    def reconnect(self, reason: str) -> None:
        """Close the pretend socket without reporting the loss and remember ``reason``; with
        ``auto_connect``, connect again on the next turn of the loop."""
        if not self._connected or self._stop.is_set():
            return
        self._connected = False
        self.reconnect_reasons.append(reason)
        if self.options.auto_connect:
            asyncio.get_running_loop().call_soon(self._reconnected)

    def _reconnected(self) -> None:
        if not self._stop.is_set():
            self._connect()

    def set_subscriptions(self, pairs: frozenset[Subscription]) -> None:
        """Set the wire's pairs; acknowledged at once while connected (``auto_ack``)."""
        self._wire = pairs
        if self._connected and self.options.auto_ack and self._events is not None:
            self._events.on_subscribed(pairs)

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The pairs the wire carries."""
        return self._wire

    @property
    def socket_open(self) -> bool:
        """Whether the (pretend) socket is open."""
        return self._connected

    @property
    def started(self) -> bool:
        """Whether the engine ran it."""
        return self._started

    def _connect(self) -> None:
        assert self._events is not None
        self._connected = True
        self._events.on_connected()
        if self.options.auto_ack:
            self._events.on_subscribed(self._wire)

    # Driving it from a test (any thread).

    def _emit(self, action: Callable[[TransportEvents], None]) -> bool:
        loop, events = self._loop, self._events
        if loop is None or events is None or self._stop.is_set():
            return False
        if loop.is_closed():
            return False
        done = threading.Event()

        def run() -> None:
            action(events)
            # After what the action left for the end of this loop turn (the routing of the
            # turn's messages to the leases), so that the caller sees its effect.
            loop.call_soon(done.set)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop ended meanwhile
            return False
        return done.wait(EMIT_TIMEOUT_SECONDS)

    def emit_connected(self) -> bool:
        """Open the socket and report ``connected``. False if not running."""
        return self._emit(lambda events: self._connect())

    def emit_connection_lost(self, reason: str = "peer closed") -> bool:
        """Close the socket and report the loss. False if not running."""

        def lose(events: TransportEvents) -> None:
            self._connected = False
            events.on_connection_lost(reason)

        return self._emit(lose)

    def emit_connect_failed(self, failure: ConnectFailure, attempt: int = 1,
                            delay: float = 0.0) -> bool:
        """Report failed attempt number ``attempt`` to connect (the transport would retry after
        ``delay`` seconds). False if not running."""
        return self._emit(lambda events: events.on_connect_failed(failure, attempt, delay))

    def emit_fatal_error(self, error: ConnectionStartError) -> bool:
        """Report a fatal error. False if not running."""
        return self._emit(lambda events: events.on_fatal_error(error))

    def emit_subscribed(self, pairs: frozenset[Subscription] | None = None) -> bool:
        """Acknowledge ``pairs`` (default: the pairs asked for). False if not running."""
        return self._emit(lambda events: events.on_subscribed(
            self._wire if pairs is None else pairs))

    def emit_message(self, message: StreamMessage) -> bool:
        """Deliver a message. False if not running."""
        return self._emit(lambda events: events.on_message(message))

    def emit_malformed(self, malformed: MalformedMessage) -> bool:
        """Report a message dropped unread. False if not running."""
        return self._emit(lambda events: events.on_malformed(malformed))


class InMemoryTransportFactory:
    """A transport factory that builds in-memory transports and remembers them.

    ``options`` applies to every new transport; tests change it between acquires.
    Thread-safety: safe to call from any thread.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._lock = threading.Lock()
        self.created: list[tuple[StreamKey, InMemoryTransport]] = []

    def __call__(
        self, key: StreamKey, credentials: Credentials, settings: Settings
    ) -> InMemoryTransport:
        transport = InMemoryTransport(self.options)
        with self._lock:
            self.created.append((key, transport))
        return transport

    def latest(self, key: StreamKey | None = None) -> InMemoryTransport:
        """The most recently created transport (for ``key``, if given).

        Raises:
            LookupError: if none was created.
        """
        with self._lock:
            for created_key, transport in reversed(self.created):
                if key is None or created_key == key:
                    return transport
        raise LookupError("no transport was created for that key")
