"""The relay's WebSocket server: Alpaca's paths and protocols, one lease per client.

Each downstream connection authenticates (:mod:`._auth`), then its subscriptions become a lease
of the relay's :class:`~streamwarden.AsyncConnectionManager` (owner: the client's name, or its
address), so the manager keeps the union of every client's subscriptions on one upstream
connection per stream kind and audits each lease. Messages are read with the leases' async
iterators on the relay's own loop, encoded once per codec (:class:`._protocol.Encoder`) and
queued to each client (:class:`._session.SendQueue`). A lease that has had to drop or
conflate a message means its client fell behind: the client is cut off with 407, as a full
send queue does; the relay never forwards a silently thinned stream.

Refused credentials get error 402 (the trading stream: ``unauthorized``), the connection is
closed, and the refusal is audited (event ``relay_auth_refused``: the path, the address,
never what was sent). A client that has not authenticated within ``auth_timeout`` gets 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from streamwarden._frames import decode_frame
from streamwarden._keys import NEWS, OPTION_DATA, TRADE_UPDATES, StreamKind
from streamwarden.audit.records import RELAY_AUTH_REFUSED, AuditRecord, AuditSink
from streamwarden.credentials import Credentials
from streamwarden.errors import StreamwardenError
from streamwarden.ids import new_id
from streamwarden.relay import _protocol as wire
from streamwarden.relay._auth import Authenticator
from streamwarden.relay._session import SendQueue
from streamwarden.runtime.manager import AsyncConnectionManager

RELAY_CLIENT_CUT = "relay.client_cut"
RELAY_AUTH_REFUSED_LOG = "relay.auth_refused"
Frame = bytes | str
_TURN = 256
"""Messages a reader forwards before it lets the other clients' readers and writers run (so
that they read a message's shared encoding while it is still cached)."""


@dataclass(frozen=True)
class RelayOptions:
    """What the server needs besides the manager: where to listen and its bounds."""

    host: str = "127.0.0.1"
    port: int = 8765
    queue_size: int = 10_000
    auth_timeout: float = 10.0
    close_timeout: float = 1.0
    ssl_context: ssl.SSLContext | None = None


class RelayServer:
    """Serves Alpaca's stream protocols to the account's processes over ``manager``.

    Thread-safety: use from the event loop that started it.
    """

    def __init__(self, manager: AsyncConnectionManager, upstream: Credentials, *,
                 authenticator: Authenticator, audit: AuditSink, options: RelayOptions,
                 log: structlog.stdlib.BoundLogger) -> None:
        self._manager = manager
        self._upstream = upstream
        self._auth = authenticator
        self._audit = audit
        self._options = options
        self._log = log
        self._encoder = wire.Encoder()
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._relay_id = new_id()
        self._fingerprint = upstream.fingerprint(manager.settings.fingerprint_key_bytes)

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        assert self._server is not None
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            OSError: the address cannot be bound.
        """
        options = self._options
        self._server = await serve(self._serve, options.host, options.port,
                                   process_request=self._route, ssl=options.ssl_context,
                                   max_queue=64, close_timeout=options.close_timeout,
                                   compression=None)

    async def stop(self) -> None:
        """Stop accepting, close every client (1001) and release its lease."""
        if self._server is not None:
            self._server.close(close_connections=False)
        clients = list(self._clients)
        await asyncio.gather(*(client.shutdown() for client in clients), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        if wire.route(urlsplit(request.path).path, self._manager.settings.feed) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        routed = wire.route(urlsplit(request.path).path, self._manager.settings.feed)
        assert routed is not None
        kind, feed = routed
        msgpack = request.headers.get("Content-Type", "").startswith("application/msgpack")
        codec: wire.Codec = "msgpack" if msgpack and kind != TRADE_UPDATES else "json"
        queue = SendQueue(connection, codec, capacity=self._options.queue_size,
                          close_timeout=self._options.close_timeout)
        client = _Client(self, connection, queue, kind=kind, feed=feed, codec=codec)
        self._clients.add(client)
        try:
            await client.run()
        finally:
            self._clients.discard(client)
            await client.shutdown()

    # What clients call back.

    async def refused(self, client: _Client) -> None:
        """Audit (and log) a refused authentication: path and address, nothing sent."""
        self._log.warning(RELAY_AUTH_REFUSED_LOG, kind=client.kind, address=client.address)
        record = AuditRecord(
            event_id=new_id(), occurred_at=datetime.now(UTC), lifecycle_id=self._relay_id,
            fingerprint=self._fingerprint, kind=client.kind, event=RELAY_AUTH_REFUSED,
            from_state=None, to_state=None, refs_before=None, refs_after=None,
            correlation_id=new_id(), host=socket.gethostname(), pid=os.getpid(),
            outcome="rejected", owner=client.address,
            details={"path": client.path, "address": client.address})
        try:
            await asyncio.to_thread(self._audit.append, record)
        except StreamwardenError as exc:
            self._log.error(RELAY_AUTH_REFUSED_LOG, error=exc.message)

    def cut(self, client: _Client, reason: str) -> None:
        """Log a client cut off as slow (407)."""
        self._log.warning(RELAY_CLIENT_CUT, code=407, owner=client.owner, kind=client.kind,
                          reason=reason)


class _Client:
    """One downstream connection: its protocol state, its lease and the readers of it."""

    def __init__(self, server: RelayServer, connection: ServerConnection, queue: SendQueue, *,
                 kind: StreamKind, feed: str | None, codec: wire.Codec) -> None:
        self.server = server
        self.connection = connection
        self.queue = queue
        self.kind = kind
        self.feed = feed
        self.codec = codec
        request = connection.request
        self.path = "" if request is None else urlsplit(request.path).path
        remote = connection.remote_address
        self.address = f"{remote[0]}:{remote[1]}" if remote else "unknown"
        self.owner: str | None = None
        self.wanted: dict[str, set[str]] = {}
        self.lease: Any = None
        self._readers: list[asyncio.Task[None]] = []
        self._done = False

    async def run(self) -> None:
        """Speak the protocol until the client goes or is cut off."""
        with contextlib.suppress(ConnectionClosed):
            if self.kind == TRADE_UPDATES:
                await self._run_trading()
            elif self.kind == OPTION_DATA and self.codec != "msgpack":
                self.queue.control([{"T": "error", "code": 412, "msg": wire.ERRORS[412]}])
            else:
                await self._run_market()

    async def shutdown(self) -> None:
        """Release the lease, stop the readers, close the connection (idempotent)."""
        if self._done:
            return
        self._done = True
        await self._release()
        self.queue.close()
        await self.queue.wait_closed()

    # Market data (stocks, crypto, options, news).

    async def _run_market(self) -> None:
        self.queue.control([{"T": "success", "msg": "connected"}])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server._options.auth_timeout
        while not self.queue.closing:
            if self.owner is None:
                try:
                    frame = await asyncio.wait_for(self.connection.recv(),
                                                   max(0.0, deadline - loop.time()))
                except TimeoutError:
                    self.queue.control([wire.error(404)])
                    return
            else:
                frame = await self.connection.recv()
            if not await self._market_frame(frame):
                return

    async def _market_frame(self, frame: Frame) -> bool:
        """Answer one client frame; False when the connection must close."""
        try:
            request = decode_frame(frame, self.codec)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            self.queue.control([wire.error(400)])
            return True
        action = request.get("action")
        if action == "auth":
            return await self._market_auth(request)
        if self.owner is None:
            self.queue.control([wire.error(401)])
        elif action in ("subscribe", "unsubscribe"):
            await self._subscribe(request, add=action == "subscribe")
        else:
            self.queue.control([wire.error(400)])
        return True

    async def _market_auth(self, request: dict[str, Any]) -> bool:
        if self.owner is not None:
            self.queue.control([wire.error(403)])
            return True
        verdict = self.server._auth.check(request.get("key"), request.get("secret"))
        if verdict is None:
            self.queue.control([wire.error(402)])
            await self.server.refused(self)
            return False
        self.owner = verdict.name or self.address
        self.queue.control([{"T": "success", "msg": "authenticated"}])
        return True

    def _changes(self, request: dict[str, Any]) -> dict[str, list[str]] | int:
        """The lease channel -> symbols of a (un)subscribe, or the error code to answer."""
        channels = wire.CHANNELS[self.kind]
        changes: dict[str, list[str]] = {}
        for key, value in request.items():
            if key == "action":
                continue
            if key not in channels:
                return 410 if key in wire.KNOWN_CHANNELS else 400
            if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
                return 400
            changes[channels[key]] = value
        return changes

    async def _subscribe(self, request: dict[str, Any], *, add: bool) -> None:
        changes = self._changes(request)
        if isinstance(changes, int):
            self.queue.control([wire.error(changes)])
            return
        before = {channel: set(symbols) for channel, symbols in self.wanted.items()}
        for channel, symbols in changes.items():
            current = self.wanted.setdefault(channel, set())
            if add:
                current.update(symbols)
            else:
                current.difference_update(symbols)
        try:
            await self._apply()
        except StreamwardenError as exc:
            self.wanted.clear()  # in place: the readers hold this dict
            self.wanted.update(before)
            self.server._log.warning("relay.subscribe_failed", owner=self.owner,
                                     error=exc.message)
            self.queue.control([wire.error(400)])
            return
        self.queue.control([wire.subscription_ack(
            self.kind, {channel: frozenset(symbols) for channel, symbols in self.wanted.items()})])

    def _pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((channel, symbol) for channel, symbols in self.wanted.items()
                         for symbol in symbols)

    async def _apply(self) -> None:
        """Make the lease carry the client's subscriptions (acquired on the first, released
        when none is left; a news lease, which cannot change, is replaced).

        Raises:
            StreamwardenError: from the manager (bad symbols included); nothing changed.
        """
        pairs = self._pairs()
        if not pairs:
            await self._release()
            return
        if self.lease is None or self.kind == NEWS:
            old = self.lease
            await self._acquire(pairs)
            if old is not None:
                await old.release()
            return
        await self._change(pairs)

    async def _acquire(self, pairs: frozenset[tuple[str, str]]) -> None:
        manager = self.server._manager
        credentials = self.server._upstream
        symbols = sorted({symbol for _, symbol in pairs})
        lease: Any
        if self.kind == NEWS:
            lease = await manager.news(credentials, symbols=symbols, owner=self.owner)
        elif self.kind == OPTION_DATA:
            lease = await manager.option_data(credentials, symbols=symbols,
                                              feed=self.feed or "indicative", owner=self.owner)
        elif self.kind == "crypto_data":
            lease = await manager.crypto_data(credentials, symbols=symbols, owner=self.owner)
        else:
            lease = await manager.market_data(credentials, symbols=symbols, owner=self.owner)
        self._stop_readers()
        self.lease = lease
        if self.kind != NEWS:
            await self._change(pairs)
        for channel in {channel for channel, _ in pairs}:
            self._read(channel)

    async def _change(self, pairs: frozenset[tuple[str, str]]) -> None:
        lease = self.lease
        current = lease.subscriptions
        for channel in {channel for channel, _ in pairs | current}:
            added = sorted(s for c, s in pairs - current if c == channel)
            removed = sorted(s for c, s in current - pairs if c == channel)
            if added:
                await getattr(lease, f"subscribe_{channel}")(*added)
                self._read(channel)
            if removed:
                await lease.unsubscribe(channel, *removed)

    def _read(self, channel: str) -> None:
        """Start the reader of ``channel`` on the lease, unless one runs."""
        if any(task.get_name() == channel for task in self._readers):
            return
        iterate: Callable[[], AsyncIterator[Any]] = getattr(self.lease, channel)
        task = asyncio.get_running_loop().create_task(self._forward(iterate(), channel),
                                                      name=channel)
        self._readers.append(task)

    async def _forward(self, messages: AsyncIterator[Any], channel: str) -> None:
        lease, queue, encoder, codec = self.lease, self.queue, self.server._encoder, self.codec
        wanted = self.wanted
        dropped = lease.dropped
        turn = 0
        try:
            async for payload in messages:
                turn += 1
                if turn % _TURN == 0:  # a backlog is read without suspending: let others run
                    await asyncio.sleep(0)
                if lease.dropped != dropped:
                    self._cut("the relay's lease queue overflowed")
                    return
                symbols = wanted.get(channel, ())
                symbol = getattr(payload, "symbol", None)
                if queue.closing:
                    return
                if symbol is None or symbol in symbols or "*" in symbols:
                    queue.data(encoder.element(payload, channel, codec))
                    if queue.cut:
                        self.server.cut(self, "its send queue was full")
                        return
        except StreamwardenError as exc:  # the lease was revoked: the upstream failed
            self.server._log.warning("relay.lease_revoked", owner=self.owner, error=exc.message)
            self.queue.close()

    def _cut(self, reason: str) -> None:
        self.queue.slow()
        self.server.cut(self, reason)

    def _stop_readers(self) -> None:
        for task in self._readers:
            task.cancel()
        self._readers = []

    async def _release(self) -> None:
        self._stop_readers()
        lease, self.lease = self.lease, None
        if lease is not None:
            with contextlib.suppress(StreamwardenError):
                await lease.release()

    # The trading stream.

    async def _run_trading(self) -> None:
        while not self.queue.closing:
            frame = await self.connection.recv()
            try:
                request = decode_frame(frame, "json")
            except ValueError:
                request = None
            if not isinstance(request, dict) or not await self._trading_request(request):
                return

    async def _trading_request(self, request: dict[str, Any]) -> bool:
        action, data = request.get("action"), request.get("data")
        if action == "authenticate" and isinstance(data, dict):
            return await self._trading_auth(data.get("key_id"), data.get("secret_key"))
        if action == "auth":
            return await self._trading_auth(request.get("key"), request.get("secret"))
        if action == "listen" and isinstance(data, dict) and isinstance(data.get("streams"),
                                                                        list):
            await self._listen(data["streams"])
            return True
        self.queue.control({"action": "error", "data": {"error_message": "invalid syntax"}})
        return False

    async def _trading_auth(self, key: object, secret: object) -> bool:
        verdict = self.server._auth.check(key, secret)
        status = "unauthorized" if verdict is None else "authorized"
        self.queue.control({"stream": "authorization",
                            "data": {"status": status, "action": "authenticate"}})
        if verdict is None:
            await self.server.refused(self)
            return False
        self.owner = verdict.name or self.address
        return True

    async def _listen(self, streams: list[Any]) -> None:
        if self.owner is None:
            self.queue.control({"stream": "authorization",
                                "data": {"status": "unauthorized", "action": "listen"}})
            return
        listening = "trade_updates" in streams
        if listening and self.lease is None:
            self.lease = await self.server._manager.trade_updates(self.server._upstream,
                                                                  owner=self.owner)
            task = asyncio.get_running_loop().create_task(self._forward_updates(self.lease))
            self._readers.append(task)
        elif not listening:
            await self._release()
        self.queue.control({"stream": "listening",
                            "data": {"streams": ["trade_updates"] if listening else []}})

    async def _forward_updates(self, lease: Any) -> None:
        try:
            async for update in lease.updates():
                if self.queue.closing:
                    return
                self.queue.frame(wire.trade_update_frame(update))
                if self.queue.cut:
                    self.server.cut(self, "its send queue was full")
                    return
        except StreamwardenError as exc:
            self.server._log.warning("relay.lease_revoked", owner=self.owner, error=exc.message)
            self.queue.close()
