"""Leases: a consumer's claim on a shared connection.

A lease is handed out by :class:`~streamwarden.ConnectionManager` and counted in the lifecycle's
``refs``. Release it (or leave its ``with`` block) when done; a second release is a logged no-op.
When the lifecycle fails or the manager shuts down, the lease is *revoked*: using it raises
:class:`~streamwarden.errors.LeaseRevokedError` carrying the cause.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from streamwarden.errors import LeaseError, LeaseRevokedError, StreamwardenError
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.market_data import Channel, Quote, Subscription, Trade

if TYPE_CHECKING:
    from streamwarden.machine.manager import ConnectionManager


class LeaseStatus(Enum):
    """Where a lease is in its own short life."""

    LIVE = "live"
    RELEASED = "released"
    REVOKED = "revoked"


Callback = Callable[[Any], object]
"""Receives each parsed message of a channel: a Quote, Trade, Bar or the SDK's TradeUpdate."""


@dataclass(frozen=True)
class LeaseInfo:
    """The identity of a lease, fixed when it is granted."""

    lease_id: str
    lifecycle_id: str
    key: StreamKey
    owner: str | None
    correlation_id: str


class Lease:
    """A claim on one shared connection.

    Market data: the lease's own subscriptions, (channel, symbol) pairs, start with the symbols
    given at acquire (quotes and trades) and change with :meth:`subscribe_quotes` and friends;
    its callbacks receive every parsed message of its subscriptions. Trade updates: its
    ``on_update`` receives every order update of the account.

    Thread-safety: any method may be called from any thread; state changes happen under the
    manager's lock. Callbacks run on the transport's thread, outside every streamwarden lock.
    """

    def __init__(
        self,
        info: LeaseInfo,
        manager: ConnectionManager,
        *,
        subscriptions: frozenset[Subscription] = frozenset(),
        callbacks: Mapping[str, Callback] | None = None,
    ) -> None:
        self.info = info
        self._manager = manager
        self.subscriptions = subscriptions
        self.callbacks: Mapping[str, Callback] = dict(callbacks or {})
        self.status = LeaseStatus.LIVE
        self.revocation: StreamwardenError | None = None

    @property
    def lease_id(self) -> str:
        """The lease's ULID, as recorded in the audit trail."""
        return self.info.lease_id

    @property
    def correlation_id(self) -> str:
        """The correlation id the lease was acquired under (given, bound, or generated)."""
        return self.info.correlation_id

    @property
    def lifecycle_id(self) -> str:
        """The lifecycle (physical connection) the lease is on."""
        return self.info.lifecycle_id

    @property
    def owner(self) -> str | None:
        """Who holds the lease, as given at acquire."""
        return self.info.owner

    @property
    def symbols(self) -> frozenset[str]:
        """Market data: the symbols this lease subscribes, on any channel."""
        return frozenset(symbol for _, symbol in self.subscriptions)

    def issued_by(self, manager: object) -> bool:
        """Whether ``manager`` issued this lease."""
        return self._manager is manager

    @property
    def is_live(self) -> bool:
        """Neither released nor revoked."""
        return self.status is LeaseStatus.LIVE

    def ensure_live(self) -> None:
        """Raise if the lease may no longer be used.

        Raises:
            LeaseRevokedError: if revoked (its cause is chained as ``__cause__``).
            LeaseError: if released.
        """
        if self.status is LeaseStatus.REVOKED:
            raise LeaseRevokedError(
                f"lease {self.lease_id} was revoked",
                operation="use",
                correlation_id=self.correlation_id,
                fingerprint=self.info.key.fingerprint,
            ) from self.revocation
        if self.status is LeaseStatus.RELEASED:
            raise LeaseError(
                f"lease {self.lease_id} was released",
                operation="use",
                correlation_id=self.correlation_id,
            )

    def raise_unless_live(self) -> None:
        """If the lease is not live, raise why: a revoked lease's cause itself (for example the
        AuthenticationError that failed its connection), or LeaseError if it was released."""
        if self.status is LeaseStatus.REVOKED:
            cause = self.revocation or LeaseRevokedError(f"lease {self.lease_id} was revoked")
            raise cause.derive(operation="acquire", correlation_id=self.correlation_id)
        self.ensure_live()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the connection is running (for leases acquired with ``wait=False``).

        Args:
            timeout: seconds; default the manager's ``start_timeout``.

        Raises:
            InvalidInputError: on a negative or non-numeric timeout.
            StartTimeoutError: if the connection is not running in time (the lease stays live).
            ConnectionStartError: the lifecycle's error if it failed (the lease is revoked).
            LeaseRevokedError / LeaseError: if the lease was revoked or released.
        """
        self._manager.wait_ready(self, timeout)

    def release(self, *, correlation_id: str | None = None) -> None:
        """Give the lease back. Idempotent: a second call is a logged no-op.

        Raises:
            InvalidInputError: on a malformed correlation id.
            AuditError: if the release could not be recorded; the lease stays live.
        """
        self._manager.release(self, correlation_id=correlation_id)

    # Market data. Each raises InvalidInputError on a malformed symbol, LeaseError /
    # LeaseRevokedError if the lease is no longer live, AuditError if the change could not be
    # recorded (then nothing changed).

    def subscribe_quotes(self, *symbols: str) -> None:
        """Receive quotes of ``symbols`` too (``on_quote``, :meth:`latest_quote`)."""
        self._manager.change_subscriptions(self, "quotes", symbols, subscribe=True)

    def subscribe_trades(self, *symbols: str) -> None:
        """Receive trades of ``symbols`` too (``on_trade``, :meth:`latest_trade`)."""
        self._manager.change_subscriptions(self, "trades", symbols, subscribe=True)

    def subscribe_bars(self, *symbols: str) -> None:
        """Receive minute bars of ``symbols`` too (``on_bar``)."""
        self._manager.change_subscriptions(self, "bars", symbols, subscribe=True)

    def unsubscribe(self, channel: Channel, *symbols: str) -> None:
        """Stop receiving ``channel`` (quotes, trades or bars) of ``symbols``."""
        self._manager.change_subscriptions(self, channel, symbols, subscribe=False)

    def latest_quote(self, symbol: str) -> Quote | None:
        """The latest quote of ``symbol`` on this connection, or None if none arrived yet.

        Raises:
            InvalidInputError: if this lease does not subscribe quotes of ``symbol``.
        """
        latest = self._manager.latest(self, "quotes", symbol)
        assert latest is None or isinstance(latest, Quote)
        return latest

    def latest_trade(self, symbol: str) -> Trade | None:
        """The latest trade of ``symbol``, or None. Raises like :meth:`latest_quote`."""
        latest = self._manager.latest(self, "trades", symbol)
        assert latest is None or isinstance(latest, Trade)
        return latest

    def wait_for_quote(self, symbol: str, timeout: float | None = None) -> Quote:
        """The latest quote of ``symbol``, waiting up to ``timeout`` seconds for the first one.

        Args:
            timeout: seconds; default the manager's ``start_timeout``.

        Raises:
            InvalidInputError: not subscribed to quotes of ``symbol``, or a bad timeout.
            TimeoutError: no quote arrived in time.
            LeaseRevokedError / LeaseError: the lease was revoked or released meanwhile.
        """
        quote = self._manager.wait_for_market_data(self, "quotes", symbol, timeout)
        assert isinstance(quote, Quote)
        return quote

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"Lease(lease_id={self.lease_id!r}, kind={self.info.key.kind!r}, "
            f"owner={self.owner!r}, status={self.status.value!r})"
        )
