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


class ReadyFlag:
    """``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait`` on the engine loop, in less
    memory: one per lease, and most leases never have a waiter (the list is made by the first).

    Thread-safety: engine loop only; except that a lease operation on its caller's thread may
    set a new lease's flag (nobody can wait on it yet) and end a ready lease (``set`` on a set
    flag does nothing), under its lifecycle's lock.
    """

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._value

    def set(self) -> None:
        """Set the flag and wake every waiter (they return even if it is cleared meanwhile)."""
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Unset the flag."""
        self._value = False

    async def wait(self) -> bool:
        """Return True once the flag is set (at once if it is)."""
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeaseHandle:
    """One lease as the engine sees it.

    Thread-safety: ``status``, ``revocation`` and ``subscriptions`` are written only by the
    lease's supervisor (on the engine loop, or on a caller's thread under the lifecycle's lock)
    and may be read from any thread; ``ready`` belongs to the engine loop (see
    :class:`ReadyFlag` for the exception).
    """

    __slots__ = ("info", "mailbox", "ready", "revocation", "status", "subscriptions")

    def __init__(self, info: LeaseInfo, mailbox: Mailbox,
                 subscriptions: frozenset[Subscription]) -> None:
        self.info = info
        self.mailbox = mailbox
        self.subscriptions = subscriptions
        self.status = LeaseStatus.LIVE
        self.revocation: StreamwardenError | None = None
        self.ready = ReadyFlag()

    def end(self, status: LeaseStatus, error: StreamwardenError | None) -> None:
        """Mark the lease released or revoked and close its delivery queue (its supervisor)."""
        if self.status is not LeaseStatus.LIVE:
            return
        self.status = status
        self.revocation = error
        self.mailbox.close(error if status is LeaseStatus.REVOKED else None)
        self.ready.set()
