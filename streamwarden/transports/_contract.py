"""The transport contract: what the engine needs from one physical stream connection.

A transport runs as a task on the manager's engine loop: :meth:`Transport.run` connects,
reconnects after drops with its own jittered exponential backoff (Settings
``reconnect_backoff_initial`` .. ``reconnect_backoff_max``), and returns when
:meth:`Transport.stop` asks it to or when it meets an error retrying cannot fix. It reports
what happens through :class:`TransportEvents`, whose methods never block and never run
consumer code: they only hand the news to the lifecycle that owns the transport (connection
events) or to the leases' delivery queues (messages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from streamwarden.errors import START_CAUSES, InvalidInputError, ReplayError

if TYPE_CHECKING:
    from streamwarden._keys import StreamKey
    from streamwarden.config import Settings
    from streamwarden.credentials import Credentials
    from streamwarden.errors import ConnectionStartError
    from streamwarden.marketdata import Subscription

#: Longest :attr:`ConnectFailure.detail`, in characters.
MAX_DETAIL = 240


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One message from the stream: its channel (one of ``marketdata.CHANNELS``, news, or
    trade_updates), the symbol it concerns (if any; None for news, whose article names its
    symbols) and the payload, parsed once (a message of :mod:`streamwarden.marketdata`, or
    alpaca-py's ``TradeUpdate``)."""

    channel: str
    symbol: str | None
    payload: Any


@dataclass(frozen=True, slots=True)
class MalformedMessage:
    """A market-data message dropped because it could not be read: its ``channel``, the
    ``symbol`` it named (None when that was unreadable), the wire ``field`` at fault and the
    ``reason`` (see :class:`~streamwarden.errors.MalformedMessageError`). Holds no value from the
    message beyond the symbol."""

    channel: str
    symbol: str | None
    field: str
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailure:
    """Why an attempt to connect failed: ``cause`` is one of
    :data:`~streamwarden.errors.START_CAUSES` (``dns``, ``refused``, ``tls``, ``auth``,
    ``timeout``, ``other``); ``detail`` names the endpoint and the reason and must hold no
    secret. ``detail`` is kept on one line of at most :data:`MAX_DETAIL` characters (longer
    text is cut and ends in ``...``).

    Raises (on construction):
        InvalidInputError: ``cause`` is not one of START_CAUSES, or ``detail`` not a string.

    Thread-safety: immutable.
    """

    cause: str
    detail: str

    def __post_init__(self) -> None:
        if self.cause not in START_CAUSES:
            raise InvalidInputError(
                f"cause must be one of {', '.join(START_CAUSES)}; got {self.cause!r}")
        if not isinstance(self.detail, str):
            raise InvalidInputError("detail must be a string")
        detail = " ".join(self.detail.split())
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL - 3] + "..."
        object.__setattr__(self, "detail", detail)


@dataclass(frozen=True)
class ReplayReport:
    """What one replay did. ``error`` is None when the fetch succeeded."""

    since: datetime
    until: datetime
    replayed: int = 0
    duplicates: int = 0
    unreadable: int = 0
    first_event_id: str | None = None
    last_event_id: str | None = None
    truncated: bool = False
    error: ReplayError | None = None

    def details(self) -> dict[str, Any]:
        """The audit ``details`` of the replay."""
        details: dict[str, Any] = {
            "since": iso(self.since), "until": iso(self.until), "replayed": self.replayed,
            "duplicates": self.duplicates,
        }
        if self.unreadable:
            details["unreadable"] = self.unreadable
        if self.first_event_id is not None:
            details["first_event_id"] = self.first_event_id
            details["last_event_id"] = self.last_event_id
        if self.truncated:
            details["truncated"] = True
        return details


class TransportEvents(Protocol):
    """What a transport reports. Call only from the engine loop; every method returns at once."""

    def on_connected(self) -> None:
        """Authenticated and listening: the stream is usable (again, after a reconnect)."""
        ...

    def on_connection_lost(self, reason: str) -> None:
        """The socket closed or failed while the stream was usable; the transport reconnects."""
        ...

    def on_connect_failed(self, failure: ConnectFailure, attempt: int, delay: float) -> None:
        """Attempt number ``attempt`` (1 for the first since the stream was last usable) to
        connect failed before the stream was usable, and the transport tries again after
        ``delay`` seconds. The lifecycle keeps the latest as the cause of a start that then
        fails or times out (in the ``start_failed`` record and the start error); while it
        reconnects after a drop it audits each as ``reconnect_failed``, and a 406 (cause
        ``connection_limit``) is transient only within ``connection_limit_grace``."""
        ...

    def on_fatal_error(self, error: ConnectionStartError) -> None:
        """The stream cannot be (re)established, e.g. refused credentials; ``run`` returns.
        ``error``'s message must hold no secret."""
        ...

    def on_subscribed(self, pairs: frozenset[Subscription]) -> None:
        """The peer acknowledged that the wire now carries exactly ``pairs`` (market data)."""
        ...

    def on_message(self, message: StreamMessage) -> None:
        """A message arrived."""
        ...

    def on_replayed(self, report: ReplayReport) -> None:
        """A trading stream fetched and delivered what its reconnect missed (or failed to)."""
        ...

    def on_malformed(self, malformed: MalformedMessage) -> None:
        """A message arrived that could not be read; it was dropped, and the others of its
        frame are delivered as usual. Counted and logged (throttled) by the lifecycle."""
        ...


class Transport(Protocol):
    """One physical connection to an Alpaca stream, driven on the engine's event loop."""

    async def run(self, events: TransportEvents) -> None:
        """Connect and stay connected until :meth:`stop` or a fatal error; then return.

        Called at most once. Must not block the loop; the engine bounds how long it takes to
        return after :meth:`stop` and cancels it past the bound.
        """
        ...

    async def stop(self) -> None:
        """Ask :meth:`run` to end and close the socket. Returns without waiting for the close
        handshake; may be called before :meth:`run` or more than once."""
        ...

    def reconnect(self, reason: str) -> None:
        """Close the current socket so that :meth:`run` connects again (the spec's
        ``reconnect_transport`` effect, after ``went_stale``). Returns at once; the close runs
        on the loop. The loss of that socket is not reported through
        :meth:`TransportEvents.on_connection_lost` (the lifecycle has already recorded why);
        :meth:`TransportEvents.on_connected` follows once the new socket is usable. A no-op
        while no socket is usable or once :meth:`stop` was called. ``reason`` holds no
        secret."""
        ...

    def set_subscriptions(self, pairs: frozenset[Subscription]) -> None:
        """The (channel, symbol) pairs the wire should carry. Returns at once; the transport
        reconciles the wire on the loop and reports the acknowledgement through
        :meth:`TransportEvents.on_subscribed`. May be called before :meth:`run`."""
        ...

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The pairs most recently asked for with :meth:`set_subscriptions`."""
        ...

    @property
    def socket_open(self) -> bool:
        """Whether an authenticated socket is open."""
        ...


def iso(moment: datetime) -> str:
    """``moment`` as Alpaca writes times: ``2026-11-30T14:30:00.000000Z``."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


TransportFactory = Callable[["StreamKey", "Credentials", "Settings"], Transport]
"""Builds the transport of a new lifecycle of a stream key. Called on the engine loop."""
