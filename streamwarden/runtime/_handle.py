"""The engine's record of one lease: identity, delivery queue, status and readiness."""

from __future__ import annotations

import asyncio
from enum import Enum

from streamwarden.errors import StreamwardenError
from streamwarden.marketdata import Subscription
from streamwarden.runtime._delivery import Mailbox
from streamwarden.runtime._lifecycle import LeaseInfo


class LeaseStatus(Enum):
    """Where a lease is in its own short life."""

    LIVE = "live"
    RELEASED = "released"
    REVOKED = "revoked"


class LeaseHandle:
    """One lease as the engine sees it.

    Thread-safety: ``status``, ``revocation`` and ``subscriptions`` are written only by the
    lease's supervisor on the engine loop and may be read from any thread; ``ready`` belongs to
    the engine loop.
    """

    __slots__ = ("info", "mailbox", "ready", "revocation", "status", "subscriptions")

    def __init__(self, info: LeaseInfo, mailbox: Mailbox,
                 subscriptions: frozenset[Subscription]) -> None:
        self.info = info
        self.mailbox = mailbox
        self.subscriptions = subscriptions
        self.status = LeaseStatus.LIVE
        self.revocation: StreamwardenError | None = None
        self.ready = asyncio.Event()

    def end(self, status: LeaseStatus, error: StreamwardenError | None) -> None:
        """Mark the lease released or revoked and close its delivery queue. Engine loop only."""
        if self.status is not LeaseStatus.LIVE:
            return
        self.status = status
        self.revocation = error
        self.mailbox.close(error if status is LeaseStatus.REVOKED else None)
        self.ready.set()
