"""Argument types shared by the command line's subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def positive_int(text: str) -> int:
    """A whole number >= 1.

    Raises:
        argparse.ArgumentTypeError: otherwise (argparse turns it into exit status 2).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded_number(kind: type[int] | type[float],
                   maximum: float = 1e9) -> Callable[[str], int | float]:
    """An argparse type: a ``kind`` number in 0..``maximum``.

    The returned callable raises ``argparse.ArgumentTypeError`` for anything else (argparse
    turns it into exit status 2).
    """
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in 0..{maximum:g}, got {text}")
        return value
    return convert
