"""The asyncio side of the simulator: the WebSocket server, routing, and a bounded shutdown.

Routes: ``/v2/<feed>`` (any feed name: ``iex``, ``sip``, ...) speaks market data, ``/stream`` the
trading stream, ``/v1beta3/crypto/<location>``, ``/v1beta1/indicative``, ``/v1beta1/opra`` and
``/v1beta1/news`` the crypto, option and news streams (see
:mod:`streamwarden.simulator.kinds`), ``/control/<action>`` answers plain HTTP control requests
(see :mod:`streamwarden.simulator._control`), ``/v2/events/trades`` serves the trade events
published so far as server-sent events (see :mod:`streamwarden.simulator._trade_events`); any
other path is refused with HTTP 404 during the opening handshake. Market data is MessagePack
when the client sends ``Content-Type: application/msgpack`` (alpaca-py does), JSON otherwise.
With a ``connect_rate_limit``, an upgrade to a stream path beyond that many per endpoint per
second is answered HTTP 429 with ``Retry-After``. A connection that ends without a close
handshake (dropped by a fault or the ``drop`` control, or a client that vanished) keeps its
account's market-data slot for the reaper window.

Shutdown: hung connections (``hang_on_close``) are aborted, every other connection gets a
close frame (1001, going away) and ``CLOSE_TIMEOUT`` seconds to answer, and whatever is still
open when the grace period ends (handshakes included) is aborted.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import cast
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamwarden._redaction import guard_websockets_logs
from streamwarden.simulator import kinds
from streamwarden.simulator._control import CONTROL_PATH, Control
from streamwarden.simulator._trade_events import EVENTS_PATH, TradeEventLog
from streamwarden.simulator._trade_events import respond as respond_events
from streamwarden.simulator.connection import SimConnection, connection_class
from streamwarden.simulator.context import ProtocolContext
from streamwarden.simulator.delivery import abort
from streamwarden.simulator.events import (
    CONNECTION_CLOSED,
    CONNECTION_OPENED,
    FAULT_INJECTED,
    STOP_FORCED,
)
from streamwarden.simulator.market_data import serve_market_data
from streamwarden.simulator.messages import Codec
from streamwarden.simulator.publisher import Publisher
from streamwarden.simulator.registry import Session
from streamwarden.simulator.stats import MARKET_DATA, TRADE_UPDATES, StreamKind
from streamwarden.simulator.trading import serve_trading

CLOSE_TIMEOUT = 1.0
"""Seconds a client has to answer the server's close frame when the simulator stops."""

TRADING_PATH = "/stream"
_FEED_PATH = re.compile(r"/v2/[A-Za-z0-9_.-]+")


def route(path: str) -> StreamKind | None:
    """The stream kind served at ``path`` (query string ignored), or None."""
    bare = urlsplit(path).path
    if bare == TRADING_PATH:
        return TRADE_UPDATES
    if _FEED_PATH.fullmatch(bare):
        return MARKET_DATA
    return kinds.route(bare)


class SimulatorServer:
    """Serves both protocols on one port until asked to stop.

    Thread-safety: lives on the simulator's event loop; no method may be called elsewhere.
    """

    def __init__(
        self, host: str, port: int, ctx: ProtocolContext, publisher: Publisher,
        trading_codec: Codec, *, control: Control, trade_events: TradeEventLog,
    ) -> None:
        self._host = host
        self._port = port
        self._ctx = ctx
        self._publisher = publisher
        self._trading_codec = trading_codec
        self._control = control
        self._trade_events = trade_events
        self._connections = connection_class(self._should_hang)
        guard_websockets_logs()  # clients' auth frames would show in websockets' DEBUG log

    def _should_hang(self, session: Session) -> bool:
        if not self._ctx.registry.faults.hang_on_close:
            return False
        self._ctx.registry.mark_hung(session)
        self._ctx.log.info(FAULT_INJECTED, fault="hang_on_close", connection_id=session.id)
        return True

    async def run(
        self, started: Callable[[int], None], stopping: asyncio.Event, grace: Callable[[], float]
    ) -> None:
        """Listen, call ``started(port)``, serve until ``stopping`` is set, then shut down
        within ``grace()`` seconds plus a short abort phase.

        Raises:
            OSError: the address cannot be bound.
        """
        server = await serve(
            self._handle, self._host, self._port,
            process_request=self._route, create_connection=self._connections,
            compression=None, ping_interval=None, close_timeout=CLOSE_TIMEOUT,
        )
        generator = asyncio.create_task(
            self._publisher.run_generator(), name="streamwarden-simulator-quotes"
        )
        started(server.sockets[0].getsockname()[1])
        try:
            await stopping.wait()
        finally:
            generator.cancel()
            await self._shutdown(server, grace())

    async def _shutdown(self, server: Server, grace: float) -> None:
        for session in self._ctx.registry.sessions():
            if session.hung:
                abort(session)
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), grace)
        except TimeoutError:
            self._ctx.log.warning(STOP_FORCED, grace=grace, left=len(self._connections.live))
        for connection in list(self._connections.live):
            connection.transport.abort()
        # Let connection_lost run for the aborted transports before the loop ends.
        await asyncio.sleep(0)

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path.startswith(CONTROL_PATH):
            return await self._control.respond(connection, request)
        if path == EVENTS_PATH:
            return respond_events(connection, request, self._trade_events,
                                  self._ctx.accounts)
        if route(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "streamwarden simulator: no such "
                                      "stream; use /v2/<feed>, /stream, /v1beta3/crypto/us, "
                                      "/v1beta1/<indicative|opra> or /v1beta1/news\n")
        wait = self._ctx.registry.admit_upgrade(urlsplit(request.path).path)
        if wait is not None:
            response = connection.respond(HTTPStatus.TOO_MANY_REQUESTS,
                                          "streamwarden simulator: too many connections\n")
            response.headers["Retry-After"] = f"{math.ceil(wait)}"
            return response
        return None

    def _codec(self, kind: StreamKind, request: Request) -> Codec:
        if kind == TRADE_UPDATES:
            return self._trading_codec
        content_type = request.headers.get("Content-Type", "").lower()
        return "msgpack" if "msgpack" in content_type else "json"

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None, "handlers run after the opening handshake"
        path = urlsplit(request.path).path
        kind = route(path)
        assert kind is not None, "_route refused every other path"
        registry, log = self._ctx.registry, self._ctx.log
        session = registry.open_session(kind, path, self._codec(kind, request), connection)
        cast(SimConnection, connection).session = session
        log.debug(CONNECTION_OPENED, connection_id=session.id, kind=kind, path=path)
        serve_protocol = serve_trading if kind == TRADE_UPDATES else serve_market_data
        try:
            await serve_protocol(session, self._ctx)
        except ConnectionClosed:
            pass
        finally:
            registry.close_session(session, abrupt=connection.protocol.close_rcvd is None)
            log.debug(CONNECTION_CLOSED, connection_id=session.id, kind=kind,
                      dropped=session.dropped, hung=session.hung)
