"""Trade updates as leases see them: alpaca-py's ``TradeUpdate``, and
:class:`ReplayedTradeUpdate` for those a reconnect missed and streamwarden fetched afterwards.

After the trading stream reconnects, the updates Alpaca sent while it was down are fetched from
Alpaca's trade events API (``GET /v2/events/trades``) and delivered, oldest first and before the
live updates that follow, as :class:`ReplayedTradeUpdate`: a ``TradeUpdate`` (code written for
live updates needs no change) that also carries the API's ``event_id``::

    def on_update(update):
        if isinstance(update, ReplayedTradeUpdate):
            log.info("missed while disconnected", event_id=update.event_id)
        ...

Importing this module loads alpaca-py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alpaca.trading.models import TradeUpdate
from pydantic import ValidationError

Identity = tuple[str, str, str, str]


class ReplayedTradeUpdate(TradeUpdate):
    """A trade update fetched from the trade events API after a reconnect (see the module).

    Attributes:
        event_id: the API's id of the event (a ULID).
    """

    event_id: str


def identity(update: TradeUpdate) -> Identity:
    """What makes a trade update one event, live or replayed: Alpaca's WebSocket messages carry
    no event id, so (event, order id, execution id, timestamp) stands in for one."""
    return (str(update.event), str(update.order.id), str(update.execution_id or ""),
            update.timestamp.isoformat())


def replayed(event: Mapping[str, Any]) -> ReplayedTradeUpdate:
    """The trade update of one event of the trade events API.

    Raises:
        ValueError: the event is not a readable trade update or has no ``event_id``.
    """
    if not isinstance(event.get("event_id"), str):
        raise ValueError("trade event without an event_id")
    try:
        return ReplayedTradeUpdate(**event)
    except (TypeError, ValidationError) as exc:
        raise ValueError(f"unreadable trade event: {type(exc).__name__}") from None
