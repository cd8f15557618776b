"""Alpaca's market-data v2 stream protocol, server side, for one connection (stocks; crypto,
options and news speak it too, with their own channels: :mod:`streamwarden.simulator.kinds`).

The exchange, as Alpaca documents it::

    server  [{"T":"success","msg":"connected"}]
    client  {"action":"auth","key":"...","secret":"..."}
    server  [{"T":"success","msg":"authenticated"}]        or [{"T":"error","code":402,...}]
    client  {"action":"subscribe","trades":["AAPL"],"quotes":["AMD","*"],"bars":[]}
    server  [{"T":"subscription","trades":["AAPL"],"quotes":["*","AMD"],...}]
    server  [{"T":"q","S":"AMD",...}, ...]                  data, while subscribed

Errors (``[{"T":"error","code":C,"msg":M}]``): 400 a frame that is not a valid request, 401 a
request before auth, 402 refused credentials (the client may try again), 403 auth twice, 404 no
auth within the auth timeout (then close), 406 in reply to a valid auth while another socket of
the same account holds this endpoint, or a socket of it dropped without a close handshake less
than the reaper window ago (then close), 410 a subscribe naming a channel of another stream
(``news`` or ``orderbooks`` on stocks; nothing changes), and, from faults, 405 and 409 in reply
to subscribe, 406 in reply to every valid auth (``connection_limit``) and 411 in reply to a valid
auth (the credentials lack the data scope; the client may try again). 407 slow client: a client
that reads nothing while a data send waits ``slow_client_timeout`` seconds is cut off (the error
is recorded; its frame cannot reach a client whose buffers are full). Control messages travel
one per frame, data in batched arrays.
"""

from __future__ import annotations

import asyncio

from streamwarden._frames import decode_frame
from streamwarden.simulator import kinds
from streamwarden.simulator.context import ProtocolContext, pause
from streamwarden.simulator.events import AUTH, FAULT_INJECTED
from streamwarden.simulator.messages import (
    authenticated,
    connected,
)
from streamwarden.simulator.registry import Session
from streamwarden.simulator.stats import OPTION_DATA

Frame = bytes | str


async def serve_market_data(session: Session, ctx: ProtocolContext) -> None:
    """Speak the market-data protocol on ``session`` until either side closes it.

    Raises:
        websockets.exceptions.ConnectionClosed: the connection closed while reading.
    """
    slow_start = ctx.registry.faults.slow_start
    if slow_start:
        ctx.log.info(FAULT_INJECTED, fault="slow_start", connection_id=session.id,
                     seconds=slow_start)
        if await pause(session.connection, slow_start):
            return
    if session.kind == OPTION_DATA and session.codec != "msgpack":
        await _refuse_json(session, ctx)
        return
    await ctx.outbox.control(session, connected())
    deadline = asyncio.get_running_loop().time() + ctx.auth_timeout
    while True:
        frame = await _receive(session, None if session.authenticated else deadline)
        if frame is None:
            await ctx.outbox.error(session, 404)
            break
        if not await _handle(session, frame, ctx):
            break
    await session.connection.close()


async def _refuse_json(session: Session, ctx: ProtocolContext) -> None:
    """Alpaca's option stream speaks MessagePack only: error 412, then close."""
    text = kinds.MSGPACK_ONLY_TEXT
    if await ctx.outbox.control(session, {"T": "error", "code": kinds.MSGPACK_ONLY_ERROR,
                                          "msg": text}):
        ctx.registry.record_error(session, kinds.MSGPACK_ONLY_ERROR, text)
    await session.connection.close()


async def _receive(session: Session, deadline: float | None) -> Frame | None:
    if deadline is None:
        return await session.connection.recv()
    remaining = deadline - asyncio.get_running_loop().time()
    try:
        return await asyncio.wait_for(session.connection.recv(), max(0.0, remaining))
    except TimeoutError:
        return None


async def _handle(session: Session, frame: Frame, ctx: ProtocolContext) -> bool:
    """Answer one client frame; False when the connection must be closed."""
    try:
        request = decode_frame(frame, session.codec)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        await ctx.outbox.error(session, 400)
        return True
    action = request.get("action")
    if action == "auth":
        return await _auth(session, request, ctx)
    if not session.authenticated:
        await ctx.outbox.error(session, 401)
    elif action in ("subscribe", "unsubscribe"):
        await _subscribe(session, request, ctx, add=action == "subscribe")
    else:
        await ctx.outbox.error(session, 400)
    return True


async def _auth(session: Session, request: dict[str, object], ctx: ProtocolContext) -> bool:
    if session.authenticated:
        await ctx.outbox.error(session, 403)
        return True
    key = request.get("key")
    key_id = key if isinstance(key, str) else None
    faults = ctx.registry.faults
    if faults.auth_failure or not ctx.accounts.accepts(key, request.get("secret")):
        ctx.registry.record_auth(session, key_id, "auth_failed")
        ctx.log.info(AUTH, kind=session.kind, connection_id=session.id, outcome="auth_failed",
                     fault=faults.auth_failure)
        await ctx.outbox.error(session, 402)
        return True
    if faults.insufficient_scope:
        ctx.registry.record_auth(session, key_id, "insufficient_scope")
        ctx.log.info(FAULT_INJECTED, fault="insufficient_scope", connection_id=session.id)
        await ctx.outbox.error(session, 411)
        return True
    if faults.connection_limit or not ctx.registry.claim(session, str(key_id)):
        ctx.registry.record_auth(session, key_id, "connection_limit")
        ctx.log.info(AUTH, kind=session.kind, connection_id=session.id,
                     outcome="connection_limit", fault=faults.connection_limit)
        await ctx.outbox.error(session, 406)
        return False
    ctx.registry.record_auth(session, key_id, "authorized")
    ctx.log.debug(AUTH, kind=session.kind, connection_id=session.id, outcome="authorized")
    await ctx.outbox.control(session, authenticated())
    return True


def _channels(request: dict[str, object],
              subscribable: tuple[str, ...]) -> dict[str, list[str]] | None:
    """The channel -> symbols of a (un)subscribe request; None when it is malformed."""
    changes: dict[str, list[str]] = {}
    for key, value in request.items():
        if key == "action":
            continue
        if key not in subscribable or not isinstance(value, list):
            return None
        if not all(isinstance(symbol, str) and symbol for symbol in value):
            return None
        changes[key] = value
    return changes


async def _subscribe(
    session: Session, request: dict[str, object], ctx: ProtocolContext, *, add: bool
) -> None:
    subscribable = kinds.CHANNELS[session.kind]
    if any(key in kinds.KNOWN_CHANNELS and key not in subscribable for key in request):
        await ctx.outbox.error(session, 410)
        return
    changes = _channels(request, subscribable)
    if changes is None:
        await ctx.outbox.error(session, 400)
        return
    faults = ctx.registry.faults
    for fault, code in (("symbol_limit", 405), ("insufficient_subscription", 409)):
        if add and getattr(faults, fault):
            ctx.log.info(FAULT_INJECTED, fault=fault, connection_id=session.id)
            await ctx.outbox.error(session, code)
            return
    current = ctx.registry.update_subscription(session, changes, add=add)
    await ctx.outbox.control(session, kinds.ack(session.kind, current))
