"""A manager's lifecycles under fleet ownership (:mod:`streamwarden.fleet`).

:class:`FleetTransports` wraps a manager's transport factory: each lifecycle's transport
claims its stream key from the fleet before it opens anything, and then runs the wrapped
factory's transport either as the key's owner (to Alpaca, as without a fleet) or as a follower
(to the owner's advertised URL, through the same transport, by overriding the key's endpoint).
When the key's ownership changes, the running transport is stopped at once (an owner that steps
down closes its upstream before anybody may take over) and, if it was usable, the loss goes to
the lifecycle as ``connection_lost``, so the spec's reconnect path (``reconnect_grace``) covers
the handover; the next transport starts once the new role is known. The key's latest known
ownership goes into every audit record of its lifecycles (``details["fleet_epoch"]`` and
``details["fleet_role"]``).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamwarden._keys import (
    CRYPTO_DATA,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    TRADE_UPDATES,
    StreamKey,
)
from streamwarden.fleet import PENDING, Fleet, Ownership
from streamwarden.runtime._supervisor import CANCEL_GRACE_SECONDS

if TYPE_CHECKING:
    from streamwarden.config import Settings
    from streamwarden.credentials import Credentials
    from streamwarden.errors import ConnectionStartError
    from streamwarden.marketdata import Subscription
    from streamwarden.transports._contract import (
        ConnectFailure,
        MalformedMessage,
        ReplayReport,
        StreamMessage,
        Transport,
        TransportEvents,
        TransportFactory,
    )


def follower_settings(settings: Settings, key: StreamKey, base: str) -> Settings:
    """``settings`` with ``key``'s endpoint moved to the owner's advertised ``base`` URL, on
    Alpaca's own path for the kind (a relay serves them all)."""
    base = base.rstrip("/")
    if key.kind == MARKET_DATA:
        return replace(settings, market_data_url=f"{base}/v2/{key.feed}")
    if key.kind == CRYPTO_DATA:
        return replace(settings, crypto_data_url=f"{base}/v1beta3/crypto/{key.feed}")
    if key.kind == OPTION_DATA:
        return replace(settings, option_data_url=f"{base}/v1beta1/{key.feed}")
    if key.kind == NEWS:
        return replace(settings, news_url=f"{base}/v1beta1/news")
    assert key.kind == TRADE_UPDATES
    return replace(settings, trade_updates_url=f"{base}/stream")


class FleetTransports:
    """The transport factory of a manager with a fleet, and the audit details of its keys.

    Thread-safety: :meth:`details` may be called from any thread; the transports it builds run
    on the engine loop.
    """

    def __init__(self, fleet: Fleet, factory: TransportFactory) -> None:
        self.fleet = fleet
        self._factory = factory
        self._known: dict[StreamKey, Ownership] = {}
        self._guard = threading.Lock()

    def __call__(self, key: StreamKey, credentials: Credentials, settings: Settings) -> Transport:
        return FleetTransport(key, credentials, settings, self)

    def build(self, key: StreamKey, credentials: Credentials, settings: Settings,
              ownership: Ownership) -> Transport:
        """The wrapped factory's transport for ``ownership`` (owner or follower)."""
        if ownership.role == "follower":
            assert ownership.advertised_url is not None
            settings = follower_settings(settings, key, ownership.advertised_url)
        return self._factory(key, credentials, settings)

    def note(self, key: StreamKey, ownership: Ownership) -> None:
        """Remember ``key``'s latest ownership, for the audit records."""
        with self._guard:
            self._known[key] = ownership

    def details(self, key: StreamKey) -> dict[str, Any]:
        """``fleet_epoch`` (the latest known owner's epoch, None before any) and ``fleet_role``
        (this manager's role then) for an audit record of ``key``."""
        with self._guard:
            ownership = self._known.get(key, PENDING)
        return {"fleet_epoch": ownership.epoch, "fleet_role": ownership.role}


def _target(ownership: Ownership) -> tuple[str, str | None] | None:
    """What the upstream should be: None (open nothing) or (role, advertised URL)."""
    if ownership.role == "owner":
        return ("owner", None)
    if ownership.role == "follower" and ownership.advertised_url is not None:
        return ("follower", ownership.advertised_url)
    return None


class _Relay:
    """Forwards a wrapped transport's events to the lifecycle, remembering whether its stream
    was usable and whether it ended fatally."""

    def __init__(self, events: TransportEvents) -> None:
        self._events = events
        self.usable = False
        self.fatal = False

    def on_connected(self) -> None:
        self.usable = True
        self._events.on_connected()

    def on_connection_lost(self, reason: str) -> None:
        self.usable = False
        self._events.on_connection_lost(reason)

    def on_connect_failed(self, failure: ConnectFailure, attempt: int, delay: float) -> None:
        self._events.on_connect_failed(failure, attempt, delay)

    def on_fatal_error(self, error: ConnectionStartError) -> None:
        self.fatal = True
        self._events.on_fatal_error(error)

    def on_subscribed(self, pairs: frozenset[Subscription]) -> None:
        self._events.on_subscribed(pairs)

    def on_message(self, message: StreamMessage) -> None:
        self._events.on_message(message)

    def on_replayed(self, report: ReplayReport) -> None:
        self._events.on_replayed(report)

    def on_malformed(self, malformed: MalformedMessage) -> None:
        self._events.on_malformed(malformed)


class FleetTransport:
    """One lifecycle's transport under fleet ownership (see the module docstring).

    Thread-safety: engine loop only; the fleet's listener hands its news over with
    ``call_soon_threadsafe``.
    """

    def __init__(self, key: StreamKey, credentials: Credentials, settings: Settings,
                 transports: FleetTransports) -> None:
        self._key = key
        self._credentials = credentials
        self._settings = settings
        self._transports = transports
        self._pairs: frozenset[Subscription] = frozenset()
        self._inner: Transport | None = None
        self._ownership = PENDING
        self._changed = asyncio.Event()
        self._stopped = False
        #: Replaced transports that did not end within stop_timeout + the cancel grace (their
        #: socket may still be open); kept referenced until they end.
        self.abandoned: set[asyncio.Future[None]] = set()

    async def run(self, events: TransportEvents) -> None:
        """Claim the key, then run the owner's or follower's transport, replacing it on each
        change of ownership, until :meth:`stop` or a fatal error; release the key on the way
        out."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        fleet = self._transports.fleet

        def listener(ownership: Ownership) -> None:
            loop.call_soon_threadsafe(self._on_ownership, ownership)

        fleet.claim(self._key, listener)
        try:
            await self._follow(events)
        finally:
            fleet.release(self._key, wait=False)

    def _on_ownership(self, ownership: Ownership) -> None:
        self._transports.note(self._key, ownership)
        if _target(ownership) != _target(self._ownership):
            self._changed.set()
        self._ownership = ownership

    async def _follow(self, events: TransportEvents) -> None:
        while not self._stopped:
            self._changed.clear()
            ownership = self._ownership
            if _target(ownership) is None:
                await self._changed.wait()
                continue
            inner = self._transports.build(self._key, self._credentials, self._settings,
                                           ownership)
            inner.set_subscriptions(self._pairs)
            self._inner = inner
            relay = _Relay(events)
            ended = await self._run_until_change(inner, relay)
            self._inner = None
            if ended or relay.fatal:
                return
            if relay.usable:
                events.on_connection_lost(f"fleet ownership changed ({self._ownership.role}, "
                                          f"epoch {self._ownership.epoch})")

    async def _run_until_change(self, inner: Transport, relay: _Relay) -> bool:
        """Run ``inner`` until it ends (True) or the key's ownership changes (False: it was
        stopped, within ``stop_timeout``, then cancelled)."""
        task = asyncio.ensure_future(inner.run(relay))
        change = asyncio.ensure_future(self._changed.wait())
        await asyncio.wait({task, change}, return_when=asyncio.FIRST_COMPLETED)
        change.cancel()
        if task.done():
            await task  # its error, if any, is the engine's to handle, as without a fleet
            return True
        await inner.stop()
        await asyncio.wait({task}, timeout=self._settings.stop_timeout)
        if not task.done():  # as the supervisor does: cancel, wait a little, then abandon
            task.cancel()
            await asyncio.wait({task}, timeout=min(CANCEL_GRACE_SECONDS,
                                                   self._settings.stop_timeout))
            if not task.done():
                self.abandoned.add(task)
                task.add_done_callback(self.abandoned.discard)
        return self._stopped

    async def stop(self) -> None:
        """End :meth:`run`: stop the running transport, if any."""
        self._stopped = True
        self._changed.set()
        if self._inner is not None:
            await self._inner.stop()

    def reconnect(self, reason: str) -> None:
        """Forwarded to the running transport (a no-op while none runs)."""
        if self._inner is not None:
            self._inner.reconnect(reason)

    def set_subscriptions(self, pairs: frozenset[Subscription]) -> None:
        """Kept for the next transport and forwarded to the running one."""
        self._pairs = pairs
        if self._inner is not None:
            self._inner.set_subscriptions(pairs)

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The pairs most recently asked for."""
        return self._pairs

    @property
    def socket_open(self) -> bool:
        """Whether the running transport has an authenticated socket open."""
        return self._inner is not None and self._inner.socket_open
