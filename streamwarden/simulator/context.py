"""What the protocol handlers share: state, outbox, accepted credentials, settings."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog
from websockets.asyncio.server import ServerConnection

from streamwarden.simulator.accounts import Accounts
from streamwarden.simulator.delivery import Outbox
from streamwarden.simulator.registry import Registry


@dataclass(frozen=True)
class ProtocolContext:
    """The dependencies of the market-data and trading protocol handlers.

    Attributes:
        registry: shared state and faults.
        outbox: sends and counts messages.
        accounts: the accepted credentials.
        auth_timeout: seconds a market-data client has after the greeting to authenticate.
        log: the simulator's logger (never given a key id or secret).
    """

    registry: Registry
    outbox: Outbox
    accounts: Accounts
    auth_timeout: float
    log: structlog.stdlib.BoundLogger


async def pause(connection: ServerConnection, seconds: float) -> bool:
    """Wait ``seconds`` unless the connection closes first; returns True when it closed."""
    try:
        await asyncio.wait_for(connection.wait_closed(), seconds)
    except TimeoutError:
        return False
    return True
