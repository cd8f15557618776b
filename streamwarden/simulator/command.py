"""The ``streamwarden simulator`` command."""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulator`` to the command line's subcommands (handler set as a default)."""
