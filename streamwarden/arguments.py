"""Argument types shared by the command line's subcommands (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


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


def positive_number(text: str) -> float:
    """A finite number > 0.

    Raises:
        argparse.ArgumentTypeError: otherwise (argparse turns it into exit status 2).
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def output_file(text: str) -> Path:
    """A file the command may create or replace: not a directory, in a writable directory.

    Checked when the arguments are parsed, so that a long command does not fail only at the end.

    Raises:
        argparse.ArgumentTypeError: otherwise, with the reason.
    """
    if not text:
        raise argparse.ArgumentTypeError("expected a file name, got ''")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file")
    directory = path.parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(directory)!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK) or (path.exists()
                                                       and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text!r} is not writable")
    return path
