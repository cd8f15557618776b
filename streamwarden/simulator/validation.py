"""Checks of the simulator's call arguments; each raises InvalidInputError with a clear reason."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation

from streamwarden.errors import InvalidInputError
from streamwarden.simulator.messages import Message, encode, wire_time

Number = Decimal | float | int | str
"""A price or quantity as callers may give it."""


def check_symbol(value: object) -> str:
    """``value`` if it is a non-empty string without whitespace (sent exactly as given).

    Raises:
        InvalidInputError: otherwise.
    """
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise InvalidInputError(f"symbol must be a non-empty string without spaces, "
                                f"got {value!r}")
    return value


def check_price(name: str, value: object) -> float:
    """``value`` (Decimal, float, int or numeric string) as a positive, finite float.

    Raises:
        InvalidInputError: not a number, or not positive and finite.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int | str):
        raise InvalidInputError(f"{name} must be a number, got {type(value).__name__}")
    try:
        price = float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise InvalidInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(price) or price <= 0:
        raise InvalidInputError(f"{name} must be positive and finite, got {value!r}")
    return price


def check_decimal(name: str, value: object) -> Decimal:
    """``value`` as an exact positive :class:`Decimal` (``"410.50"`` stays ``410.50``).

    Raises:
        InvalidInputError: as :func:`check_price`.
    """
    check_price(name, value)
    return Decimal(str(value))


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` if it is a whole number >= ``minimum``.

    Raises:
        InvalidInputError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def check_rate(value: object) -> float:
    """``value`` as quotes per second if it is a finite number >= 0.

    Raises:
        InvalidInputError: otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"quote_rate must be a number, got {type(value).__name__}")
    rate = float(value)
    if not math.isfinite(rate) or rate < 0:
        raise InvalidInputError(f"quote_rate must be finite and >= 0, got {value!r}")
    return rate


def check_bar(open_price: object, high_price: object, low_price: object,
              close_price: object) -> dict[str, float]:
    """A bar's four prices by keyword (``open_price``, ...), checked with :func:`check_price`
    and for consistency.

    Raises:
        InvalidInputError: a bad price, or ``low_price`` above the open or close, or
            ``high_price`` below them.
    """
    prices = {name: check_price(name, value) for name, value in (
        ("open_price", open_price), ("high_price", high_price),
        ("low_price", low_price), ("close_price", close_price))}
    body = (prices["open_price"], prices["close_price"])
    if prices["low_price"] > min(body) or prices["high_price"] < max(body):
        raise InvalidInputError("a bar needs low <= open, close <= high")
    return prices


MAX_CLIENT_ORDER_ID = 128


def check_client_order_id(value: object) -> str | None:
    """``value`` if it is None or a printable string of 1..128 characters (Alpaca's limit).

    Raises:
        InvalidInputError: otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ORDER_ID \
            or not value.isprintable():
        raise InvalidInputError(
            f"client_order_id must be 1..{MAX_CLIENT_ORDER_ID} printable characters, "
            f"got {value!r}")
    return value


def raw_batch(batch: object) -> list[Message]:
    """``batch`` as messages to send unchecked: aware datetimes become Alpaca's wire time.

    Raises:
        InvalidInputError: ``batch`` is empty or not a sequence of maps with string keys, or
            holds a value MessagePack or JSON cannot carry (a naive datetime, an object).
    """
    if isinstance(batch, str | bytes) or not isinstance(batch, Sequence) or not batch:
        raise InvalidInputError("batch must be a non-empty sequence of messages")
    messages: list[Message] = []
    for message in batch:
        if not isinstance(message, Mapping) or not all(isinstance(k, str) for k in message):
            raise InvalidInputError("each message of a batch must be a map with string keys")
        messages.append({key: wire_time(value) if isinstance(value, datetime)
                         and value.tzinfo is not None else value
                         for key, value in message.items()})
    for codec in ("msgpack", "json"):
        try:
            encode(messages, codec)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInputError(f"the batch cannot be sent as {codec}: {exc}") from None
    return messages
