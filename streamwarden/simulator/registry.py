"""The simulator's shared state: faults, quote rate, sessions, counters, and waiting on them.

It also keeps Alpaca's connection rules: one authenticated market-data socket per account and
endpoint (a second is refused with 406), a reaper window after an abrupt drop during which the
dropped socket still holds the slot, and an optional cap on WebSocket upgrades per endpoint per
second (HTTP 429 beyond it).

Threading model: sessions are created and changed only on the simulator's event loop, always
through :class:`Registry` methods that hold its lock; other threads only read, through
:meth:`Registry.snapshot` and :meth:`Registry.wait_for`, under the same lock. Code on the loop may
therefore read a :class:`Session`'s fields without the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from websockets.asyncio.server import ServerConnection

from streamwarden.simulator.faults import Faults
from streamwarden.simulator.messages import Codec
from streamwarden.simulator.stats import (
    MARKET_DATA,
    STREAM_KINDS,
    AuthAttempt,
    AuthOutcome,
    ConnectionStats,
    ErrorSent,
    KindStats,
    SimulatorStats,
    StreamKind,
)

WILDCARD = "*"
RATE_WINDOW_SECONDS = 1.0
"""The window of the upgrade cap (``connect_rate_limit`` upgrades per endpoint per window)."""


@dataclass(frozen=True)
class ConnectionRules:
    """How strict the simulator is about connections, as Alpaca is.

    Attributes:
        reaper_window: seconds an abruptly dropped market-data socket (no close handshake)
            still holds its account's slot on that endpoint; 0 frees it at once.
        connect_rate_limit: WebSocket upgrades per endpoint per second beyond which the
            upgrade is answered HTTP 429 (with ``Retry-After``); None for no cap.
    """

    reaper_window: float = 90.0
    connect_rate_limit: int | None = None


@dataclass(eq=False)
class Session:
    """One client connection as the simulator's loop sees it (see the module's threading note)."""

    id: int
    kind: StreamKind
    path: str
    codec: Codec
    connection: ServerConnection
    key_id: str | None = None
    authenticated: bool = False
    subscription: dict[str, set[str]] = field(default_factory=dict)
    data_messages: int = 0
    control_messages: int = 0
    is_open: bool = True
    dropped: bool = False
    hung: bool = False

    def wants(self, channel: str, symbol: str) -> bool:
        """Whether data for ``symbol`` on ``channel`` goes to this connection."""
        symbols = self.subscription.get(channel, ())
        wanted = symbol in symbols or WILDCARD in symbols
        return wanted and self.authenticated and not (self.hung or self.dropped)

    def stats(self) -> ConnectionStats:
        """An immutable copy (call with the registry's lock held, or on the loop)."""
        return ConnectionStats(
            id=self.id, kind=self.kind, path=self.path, is_open=self.is_open,
            authenticated=self.authenticated, key_id=self.key_id,
            subscription={ch: frozenset(s) for ch, s in self.subscription.items() if s},
            data_messages=self.data_messages, control_messages=self.control_messages,
            dropped=self.dropped, hung=self.hung,
        )


class Registry:
    """Faults, quote rate, sessions and counters, behind one lock.

    Args:
        faults: the initial faults.
        quote_rate: the initial generated quotes per second per subscribed symbol.
        history: how many closed connections, auth attempts and errors to keep for stats.

    Thread-safety: every public method may be called from any thread, but the methods that
    change sessions are meant for the simulator's loop (see the module docstring).
    """

    def __init__(self, faults: Faults, quote_rate: float, history: int = 1000,
                 rules: ConnectionRules | None = None) -> None:
        self._changed = threading.Condition(threading.RLock())
        self._rules = rules or ConnectionRules()
        self._held: dict[tuple[str, str], float] = {}  # (path, key id) -> reaped at (monotonic)
        self._upgrades: dict[str, deque[float]] = {}
        self._faults = faults
        self._drop_spent = False
        self._quote_rate = quote_rate
        self._next_id = 1
        self._open: dict[int, Session] = {}
        self._closed: deque[ConnectionStats] = deque(maxlen=history)
        self._auth: deque[AuthAttempt] = deque(maxlen=history)
        self._errors: deque[ErrorSent] = deque(maxlen=history)
        self._kinds = {kind: KindStats() for kind in STREAM_KINDS}

    def _count(self, kind: StreamKind, **increments: int) -> None:
        totals = self._kinds[kind]
        self._kinds[kind] = replace(
            totals, **{name: getattr(totals, name) + n for name, n in increments.items()}
        )

    # Faults and quote rate.

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        with self._changed:
            return self._faults

    def set_faults(self, faults: Faults) -> Faults:
        """Replace the faults (re-arming ``drop_once``); returns the previous ones."""
        with self._changed:
            previous, self._faults, self._drop_spent = self._faults, faults, False
            self._changed.notify_all()
            return previous

    @property
    def quote_rate(self) -> float:
        """Generated quotes per second per subscribed symbol (0 = generator off)."""
        with self._changed:
            return self._quote_rate

    def set_quote_rate(self, rate: float) -> None:
        """Set the generator's rate (validated by the caller)."""
        with self._changed:
            self._quote_rate = rate

    # Sessions (the loop).

    def open_session(
        self, kind: StreamKind, path: str, codec: Codec, connection: ServerConnection
    ) -> Session:
        """Register a new connection; returns its session."""
        with self._changed:
            session = Session(self._next_id, kind, path, codec, connection)
            self._next_id += 1
            self._open[session.id] = session
            self._count(kind, opened=1, open=1)
            self._changed.notify_all()
            return session

    def close_session(self, session: Session, *, abrupt: bool = False) -> None:
        """Record that ``session``'s socket is closed (idempotent). ``abrupt``: closed without
        a close handshake (the client vanished); an authenticated market-data session then
        holds its slot for the reaper window, as a dropped one does."""
        with self._changed:
            if self._open.pop(session.id, None) is None:
                return
            if abrupt or session.dropped:
                self._hold(session)
            session.is_open = False
            self._closed.append(session.stats())
            self._count(session.kind, open=-1)
            self._changed.notify_all()

    def record_auth(self, session: Session, key_id: str | None, outcome: AuthOutcome) -> None:
        """Record an auth attempt; the session is authenticated when ``outcome`` says so."""
        with self._changed:
            session.key_id = key_id
            session.authenticated = outcome == "authorized"
            self._auth.append(AuthAttempt(session.id, session.kind, key_id, outcome))
            self._count(session.kind, auth_attempts=1, authorized=int(session.authenticated))
            self._changed.notify_all()

    def record_control(self, session: Session, count: int = 1) -> None:
        """Count control messages (greetings, acks, errors) sent on ``session``."""
        with self._changed:
            session.control_messages += count
            self._changed.notify_all()

    def record_error(self, session: Session, code: int, message: str) -> None:
        """Record an error sent on ``session`` (count it with :meth:`record_control` too)."""
        with self._changed:
            self._errors.append(ErrorSent(session.id, session.kind, code, message))
            self._changed.notify_all()

    def update_subscription(
        self, session: Session, changes: Mapping[str, Iterable[str]], *, add: bool
    ) -> dict[str, set[str]]:
        """Add (or remove) symbols per channel; returns the session's whole subscription."""
        with self._changed:
            for channel, symbols in changes.items():
                current = session.subscription.setdefault(channel, set())
                if add:
                    current.update(symbols)
                else:
                    current.difference_update(symbols)
            self._changed.notify_all()
            return session.subscription

    def replace_subscription(self, session: Session, channel: str, symbols: Iterable[str]) -> None:
        """Make ``symbols`` the whole subscription of ``session`` on ``channel``."""
        with self._changed:
            session.subscription[channel] = set(symbols)
            self._changed.notify_all()

    def reserve_data(self, session: Session, count: int) -> tuple[int, bool]:
        """Count up to ``count`` data messages about to be sent on ``session``.

        Returns how many may be sent before the ``drop_after`` fault fires, and whether the
        connection must be dropped right after sending them (it is then already marked
        dropped). Nothing may be sent on a closed, dropped or hung session.
        """
        with self._changed:
            if session.dropped or session.hung or not session.is_open or self._faults.mute:
                return 0, False
            faults, allowed, drop = self._faults, count, False
            limit = faults.drop_after
            if limit is not None and not (faults.drop_once and self._drop_spent):
                allowed = max(0, min(count, limit - session.data_messages))
                drop = session.data_messages + allowed >= limit
                self._drop_spent = drop and faults.drop_once
            session.data_messages += allowed
            self._count(session.kind, data_messages=allowed)
            if drop:
                self._mark_dropped(session)
            self._changed.notify_all()
            return allowed, drop

    def _mark_dropped(self, session: Session) -> None:
        session.dropped = True
        self._count(session.kind, drops=1)
        self._hold(session)

    def _hold(self, session: Session) -> None:
        if session.authenticated and session.key_id is not None and session.kind == MARKET_DATA:
            until = time.monotonic() + self._rules.reaper_window
            slot = (session.path, session.key_id)
            self._held[slot] = max(until, self._held.get(slot, 0.0))

    def claim(self, session: Session, key_id: str) -> bool:
        """Whether ``session`` may take its account's market-data slot on its endpoint: no
        other live authenticated session of that account there, and no dropped one still
        inside the reaper window. A hung session (``hang_on_close``) does not hold the slot:
        its client sent its close frame, a clean close. Call before authorising it."""
        with self._changed:
            slot = (session.path, key_id)
            if self._held.get(slot, 0.0) > time.monotonic():
                return False
            self._held.pop(slot, None)
            return not any(
                other is not session and other.authenticated
                and not (other.dropped or other.hung)
                and other.key_id == key_id and other.path == session.path
                for other in self._open.values())

    def admit_upgrade(self, path: str) -> float | None:
        """Count a WebSocket upgrade to ``path``; the seconds the client must wait (the
        ``Retry-After`` of a 429) when it is over the cap, else None."""
        limit = self._rules.connect_rate_limit
        if limit is None:
            return None
        with self._changed:
            now = time.monotonic()
            recent = self._upgrades.setdefault(path, deque())
            while recent and recent[0] <= now - RATE_WINDOW_SECONDS:
                recent.popleft()
            if len(recent) >= limit:
                return RATE_WINDOW_SECONDS
            recent.append(now)
            return None

    def mark_dropped(self, session: Session) -> bool:
        """Mark ``session`` as aborted by the server; False when it already was or is closed."""
        with self._changed:
            if session.dropped or not session.is_open:
                return False
            self._mark_dropped(session)
            self._changed.notify_all()
            return True

    def mark_hung(self, session: Session) -> None:
        """Record that ``session``'s close handshake is left unanswered."""
        with self._changed:
            session.hung = True
            self._changed.notify_all()

    def sessions(self, kind: StreamKind | None = None) -> list[Session]:
        """The open sessions (of ``kind``), in order of opening."""
        with self._changed:
            return [s for s in self._open.values() if kind is None or s.kind == kind]

    def subscribers(self, channel: str, symbol: str) -> list[Session]:
        """Open sessions that want ``symbol`` on ``channel`` (for the trading stream: the
        ``streams`` channel and ``trade_updates``)."""
        with self._changed:
            return [s for s in self._open.values() if s.wants(channel, symbol)]

    def data_subscribers(self, kind: StreamKind, channel: str,
                         symbols: Iterable[str]) -> list[Session]:
        """Open sessions of ``kind`` that want any of ``symbols`` on ``channel``."""
        wanted = tuple(symbols)
        with self._changed:
            return [s for s in self._open.values()
                    if s.kind == kind and any(s.wants(channel, symbol) for symbol in wanted)]

    def quote_symbols(self) -> list[str]:
        """The symbols (not ``*``) some open stock session subscribes quotes for, sorted."""
        with self._changed:
            symbols: set[str] = set()
            for session in self.sessions(MARKET_DATA):  # only authenticated ones subscribe
                symbols |= session.subscription.get("quotes", set())
            symbols.discard(WILDCARD)
            return sorted(symbols)

    # Observation (any thread).

    def snapshot(self) -> SimulatorStats:
        """An immutable snapshot of everything observable."""
        with self._changed:
            connections = [*self._closed, *(s.stats() for s in self._open.values())]
            connections.sort(key=lambda c: c.id)
            return SimulatorStats(
                kinds=dict(self._kinds), connections=tuple(connections),
                auth_attempts=tuple(self._auth), errors=tuple(self._errors),
            )

    def wait_for(
        self, predicate: Callable[[SimulatorStats], bool], timeout: float
    ) -> SimulatorStats:
        """Wait until ``predicate(snapshot)`` is true; returns that snapshot.

        The predicate is evaluated after every change, under the lock (it may call
        :meth:`snapshot`, not block).

        Raises:
            TimeoutError: the predicate stayed false for ``timeout`` seconds; the message
                carries the last snapshot's totals.
            Exception: whatever ``predicate`` raises.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                stats = self.snapshot()
                if predicate(stats):
                    return stats
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"simulator condition not met within {timeout:g} s; "
                                       f"totals {dict(stats.kinds)}")
                self._changed.wait(remaining)
