"""The server-side WebSocket connection, extended for the ``hang_on_close`` fault.

websockets answers a peer's close frame by itself, inside ``data_received``. To model a peer that
never completes the closing handshake, :class:`SimConnection` swallows that automatic answer
(the close frame and the TCP half-close) while the fault is on, and stops reading the socket, so
the client's ``close()`` waits for its own timeout. The socket stays open on the server side
until the simulator aborts it when it stops.

It also tracks every live transport of a server, handshaking ones included, so that the
simulator can abort whatever is left when it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from websockets.asyncio.server import ServerConnection

from streamwarden.simulator.registry import Session

HangPolicy = Callable[[Session], bool]
"""Decides, when a client's close frame arrives on ``Session``, whether to leave it unanswered."""


class SimConnection(ServerConnection):
    """A ``ServerConnection`` that can leave a client's close handshake unanswered.

    Use :func:`connection_class` to get a subclass bound to one simulator.

    Thread-safety: like every asyncio protocol, used on its event loop only.
    """

    hang_policy: HangPolicy
    live: set[SimConnection]
    session: Session | None = None
    _hang: bool | None = None  # decided once, when the client's close frame arrives

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self)
        super().connection_lost(exc)

    def send_data(self) -> None:
        """Write what the protocol has to send, unless this connection is hanging."""
        # close_rcvd_then_sent: the client sent the first close frame and the protocol has
        # just queued the automatic reply.
        if self._hang is None and self.protocol.close_rcvd_then_sent and self.session:
            self._hang = self.hang_policy(self.session)
            if self._hang:
                self.transport.pause_reading()
        if self._hang:
            self.protocol.data_to_send()  # discarded: the close reply is never sent
            return
        super().send_data()


def connection_class(hang_policy: HangPolicy) -> type[SimConnection]:
    """A :class:`SimConnection` subclass for one server: its hang policy and live set."""
    namespace = {"hang_policy": staticmethod(hang_policy), "live": set()}
    return cast("type[SimConnection]", type("BoundSimConnection", (SimConnection,), namespace))
