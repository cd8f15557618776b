"""Checks of the arguments of public calls; each raises InvalidInputError with a clear reason."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from streamwarden.credentials import Credentials
from streamwarden.errors import InvalidInputError

MAX_OWNER_LENGTH = 128
MAX_CLIENT_ORDER_ID_LENGTH = 128  # Alpaca's limit on an order's client_order_id
# Alpaca equity symbols: letters and digits with an optional class suffix (BRK.B, BF-B);
# "*" subscribes to every symbol.
_SYMBOL = re.compile(r"^(\*|[A-Z][A-Z0-9]{0,9}([.\-/][A-Z0-9]{1,5})?)$")


def check_seconds(name: str, value: object, *, allow_zero: bool = True) -> float:
    """``value`` as seconds if it is a finite number >= 0 (> 0 unless ``allow_zero``).

    Raises:
        InvalidInputError: if it is not a number, negative (or zero), NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} must be a number of seconds, got {type(value).__name__}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidInputError(f"{name} must be a finite number of seconds, got {seconds}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(f"{name} must be {bound} seconds, got {seconds}")
    return seconds


def check_owner(value: object) -> str | None:
    """``value`` if it is None or 1..128 printable characters.

    Raises:
        InvalidInputError: otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_OWNER_LENGTH:
        raise InvalidInputError(f"owner must be a string of 1..{MAX_OWNER_LENGTH} characters")
    if not value.isprintable():
        raise InvalidInputError("owner must be printable")
    return value


def check_client_order_id_prefix(value: object) -> str | None:
    """``value`` if it is None or 1..128 printable characters (an order's client_order_id can
    be no longer).

    Raises:
        InvalidInputError: otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            f"client_order_id_prefix must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_CLIENT_ORDER_ID_LENGTH or not value.isprintable():
        raise InvalidInputError(
            f"client_order_id_prefix must be 1..{MAX_CLIENT_ORDER_ID_LENGTH} printable "
            f"characters, got {value[:32]!r}")
    return value


def check_symbols(values: object) -> frozenset[str]:
    """The symbols, upper-cased, if each is a valid Alpaca symbol.

    Raises:
        InvalidInputError: on a bare string (a common slip for a one-element list), a
            non-string item, or a malformed symbol.
    """
    return _symbols(values, _SYMBOL, "malformed symbol {!r}")


def check_credentials(value: object) -> Credentials:
    """``value`` if it is a :class:`Credentials`.

    Raises:
        InvalidInputError: otherwise (the value is not echoed: it may hold a secret).
    """
    if not isinstance(value, Credentials):
        raise InvalidInputError(
            f"credentials must be a streamwarden.Credentials, got {type(value).__name__}"
        )
    return value


# OCC option symbols, as Alpaca streams them: root, expiry YYMMDD, C or P, strike x 1000 in 8
# digits (AAPL241220C00150000). No wildcard: Alpaca's option stream refuses "*" for quotes.
_OPTION_SYMBOL = re.compile(r"^[A-Z]{1,6}[0-9]{6}[CP][0-9]{8}$")


def check_option_symbols(values: object) -> frozenset[str]:
    """The option contract symbols, upper-cased, if each is an OCC symbol.

    Raises:
        InvalidInputError: on a bare string, a non-string item, or a malformed symbol.
    """
    return _symbols(values, _OPTION_SYMBOL, "malformed option symbol {!r} (expected an OCC "
                                            "symbol such as AAPL241220C00150000)")


def _symbols(values: object, pattern: re.Pattern[str], malformed: str) -> frozenset[str]:
    """The upper-cased symbols of ``values`` if each matches ``pattern``.

    Raises:
        InvalidInputError: on a bare string, a non-string item, or a symbol that does not
            match (``malformed`` formatted with its first 32 characters).
    """
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidInputError("symbols must be a list of symbols, not a single string")
    symbols = set()
    for value in values:
        if not isinstance(value, str):
            raise InvalidInputError(f"symbol must be a string, got {type(value).__name__}")
        symbol = value.strip().upper()
        if not pattern.match(symbol):
            raise InvalidInputError(malformed.format(value[:32]))
        symbols.add(symbol)
    return frozenset(symbols)
