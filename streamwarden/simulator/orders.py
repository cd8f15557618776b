"""Alpaca trading-stream messages: authorization, listening, errors and ``trade_updates`` events.

A trade update carries an order in the shape of Alpaca's REST order object (the fields
alpaca-py's ``Order`` model requires, with Alpaca's types: ids as UUID strings, quantities and
prices as decimal strings, times as RFC 3339 strings), so the SDK parses it into ``TradeUpdate``.

All functions are pure and thread-safe.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from streamwarden.simulator.messages import Message

TRADE_UPDATES = "trade_updates"

ORDER_STATUS = {
    "new": "new",
    "accepted": "accepted",
    "pending_new": "pending_new",
    "partial_fill": "partially_filled",
    "fill": "filled",
    "done_for_day": "done_for_day",
    "canceled": "canceled",
    "expired": "expired",
    "replaced": "replaced",
    "rejected": "rejected",
    "pending_cancel": "pending_cancel",
    "pending_replace": "pending_replace",
    "stopped": "stopped",
    "suspended": "suspended",
    "calculated": "calculated",
}
"""The ``trade_updates`` events the simulator emits, and the order status each one implies."""

EXECUTION_EVENTS = ("fill", "partial_fill")
"""Events that report an execution (``execution_id``, ``price``, ``qty``, ``position_qty``)."""


def authorization(*, authorized: bool, action: str = "authenticate") -> Message:
    """The ``authorization`` reply: authorized or unauthorized, for ``action``."""
    status = "authorized" if authorized else "unauthorized"
    return {"stream": "authorization", "data": {"status": status, "action": action}}


def listening(streams: list[str]) -> Message:
    """The ``listening`` acknowledgement naming every stream the connection listens to."""
    return {"stream": "listening", "data": {"streams": streams}}


def stream_error(message: str) -> Message:
    """An in-stream error, which Alpaca sends just before closing the connection."""
    return {"action": "error", "data": {"error_message": message}}


def rfc3339(moment: datetime) -> str:
    """``moment`` (timezone-aware) in Alpaca's REST form, ``2024-05-01T14:30:00.123456Z``."""
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class OrderFill:
    """What a trade update reports about one order.

    Attributes:
        symbol: the asset.
        side: ``buy`` or ``sell``.
        qty: the order's quantity.
        price: the execution price (fills), or the order's limit price otherwise; ``None``
            makes a market order without an execution price.
        order_id: the order's UUID; a fresh one when ``None``.
        position_qty: the position after an execution; ``qty`` (signed by side) when ``None``.
        client_order_id: the client's id of the order; derived from ``order_id`` when ``None``.
    """

    symbol: str
    side: Literal["buy", "sell"]
    qty: Decimal
    price: Decimal | None = None
    order_id: uuid.UUID | None = None
    position_qty: Decimal | None = None
    client_order_id: str | None = None


def trade_update(event: str, fill: OrderFill, *, now: datetime) -> Message:
    """A ``trade_updates`` message for ``event`` about ``fill``'s order, at ``now``.

    Raises:
        ValueError: ``event`` is not one of :data:`ORDER_STATUS`, or a fill event has no price.
    """
    if event not in ORDER_STATUS:
        raise ValueError(f"unknown trade update event {event!r}")
    executed = event in EXECUTION_EVENTS
    if executed and fill.price is None:
        raise ValueError(f"a {event} event needs a price")
    stamp = rfc3339(now)
    order_id = fill.order_id or uuid.uuid4()
    filled_qty = fill.qty if event == "fill" else Decimal(0)
    if event == "partial_fill":
        filled_qty = fill.qty / 2
    order: Message = {
        "id": str(order_id),
        "client_order_id": fill.client_order_id or str(uuid.uuid5(uuid.NAMESPACE_OID,
                                                                  str(order_id))),
        "created_at": stamp, "updated_at": stamp, "submitted_at": stamp,
        "filled_at": stamp if event == "fill" else None,
        "expired_at": stamp if event == "expired" else None,
        "canceled_at": stamp if event == "canceled" else None,
        "failed_at": stamp if event == "rejected" else None,
        "replaced_at": stamp if event == "replaced" else None,
        "replaced_by": None, "replaces": None,
        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_OID, fill.symbol)),
        "symbol": fill.symbol, "asset_class": "us_equity", "notional": None,
        "qty": str(fill.qty), "filled_qty": str(filled_qty),
        "filled_avg_price": str(fill.price) if executed else None,
        "order_class": "simple",
        "order_type": "market" if fill.price is None else "limit",
        "type": "market" if fill.price is None else "limit",
        "side": fill.side, "time_in_force": "day",
        "limit_price": None if fill.price is None else str(fill.price),
        "stop_price": None, "status": ORDER_STATUS[event], "extended_hours": False,
        "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
    }
    data: Message = {"event": event, "order": order, "timestamp": stamp}
    if executed:
        signed = filled_qty if fill.side == "buy" else -filled_qty
        position = fill.position_qty if fill.position_qty is not None else signed
        data.update(execution_id=str(uuid.uuid4()), price=str(fill.price),
                    qty=str(filled_qty), position_qty=str(position))
    return {"stream": TRADE_UPDATES, "data": data}
