"""The ``streamwarden db`` and ``streamwarden audit`` commands."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``db`` and ``audit`` to the command line's subcommands.

    Each subparser sets ``handler`` (``Callable[[argparse.Namespace], int]``) as its default.
    """
