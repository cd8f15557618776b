"""An in-memory transport, for fast tests of the manager and for embedding without a network.

It has no socket and no thread of its own: it connects (or fails) synchronously inside
:meth:`InMemoryTransport.start`, and tests drive it with the ``emit_*`` methods. A transport
built with ``hang_on_stop=True`` behaves like a peer that never finishes closing: ``stop`` waits
its full timeout, returns False, and its "thread" stays alive.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from dataclasses import dataclass

from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import ConnectionStartError
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.market_data import Subscription
from streamwarden.machine.transport import StreamMessage, TransportListener


@dataclass(frozen=True)
class TransportOptions:
    """How an in-memory transport behaves."""

    auto_connect: bool = True
    fatal_error: ConnectionStartError | None = None
    hang_on_stop: bool = False


class InMemoryTransport:
    """A transport whose connection events are produced by the test.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, options: TransportOptions | None = None) -> None:
        self.options = options or TransportOptions()
        self._lock = threading.Lock()
        self._listener: TransportListener | None = None
        self._started = False
        self._stopped = False
        self._socket_open = False
        self._thread_alive = False
        self._wire: set[Subscription] = set()
        self._hung = threading.Event()

    def start(self, listener: TransportListener) -> None:
        """Connect now: report ``connected`` (auto_connect) or the configured fatal error."""
        with self._lock:
            if self._started or self._stopped:
                return
            self._started = True
            self._listener = listener
            self._thread_alive = True
        if self.options.fatal_error is not None:
            listener.on_fatal_error(self.options.fatal_error)
        elif self.options.auto_connect:
            self.emit_connected()

    def stop(self, timeout: float) -> bool:
        """Close; with ``hang_on_stop`` wait ``timeout`` and report the thread abandoned."""
        with self._lock:
            self._stopped = True
            self._socket_open = False
            self._listener = None
            if not self.options.hang_on_stop:
                self._thread_alive = False
                return True
        self._hung.wait(timeout)
        return False

    def subscribe(self, subscriptions: Collection[Subscription]) -> None:
        with self._lock:
            self._wire.update(subscriptions)

    def unsubscribe(self, subscriptions: Collection[Subscription]) -> None:
        with self._lock:
            self._wire.difference_update(subscriptions)

    @property
    def socket_open(self) -> bool:
        return self._socket_open

    @property
    def thread_alive(self) -> bool:
        return self._thread_alive

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        with self._lock:
            return frozenset(self._wire)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` was called."""
        return self._started

    def _current_listener(self) -> TransportListener | None:
        with self._lock:
            return self._listener

    def emit_connected(self) -> bool:
        """Open the socket and report ``connected``. Returns False if not started or stopped."""
        with self._lock:
            listener = self._listener
            if listener is not None:
                self._socket_open = True
        if listener is None:
            return False
        listener.on_connected()
        return True

    def emit_connection_lost(self, reason: str = "peer closed") -> bool:
        """Close the socket and report the loss. Returns False if not started or stopped."""
        with self._lock:
            listener = self._listener
            self._socket_open = False
        if listener is None:
            return False
        listener.on_connection_lost(reason)
        return True

    def emit_fatal_error(self, error: ConnectionStartError) -> bool:
        """Report a fatal error. Returns False if not started or stopped."""
        listener = self._current_listener()
        if listener is None:
            return False
        listener.on_fatal_error(error)
        return True

    def emit_message(self, message: StreamMessage) -> bool:
        """Deliver a message. Returns False if not started or stopped."""
        listener = self._current_listener()
        if listener is None:
            return False
        listener.on_message(message)
        return True


class InMemoryTransportFactory:
    """A :data:`TransportFactory` that builds in-memory transports and remembers them.

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
