"""Alpaca's market-data v2 stream protocol, server side, for one connection.

The exchange, as Alpaca documents it::

    server  [{"T":"success","msg":"connected"}]
    client  {"action":"auth","key":"...","secret":"..."}
    server  [{"T":"success","msg":"authenticated"}]        or [{"T":"error","code":402,...}]
    client  {"action":"subscribe","trades":["AAPL"],"quotes":["AMD","*"],"bars":[]}
    server  [{"T":"subscription","trades":["AAPL"],"quotes":["*","AMD"],...}]
    server  [{"T":"q","S":"AMD",...}, ...]                  data, while subscribed

Errors (``[{"T":"error","code":C,"msg":M}]``): 400 a frame that is not a valid request, 401 a
request before auth, 402 refused credentials (the client may try again), 403 auth twice, 404 no
auth within the auth timeout (then close), 410 a subscribe naming a channel of another stream
(``news``, ``orderbooks``; nothing changes), and, from faults, 405 and 409 in reply to subscribe,
406 in reply to a valid auth (then close) and 411 in reply to a valid auth (the credentials lack
the data scope; the client may try again). 407 slow client: a client that reads nothing while a
data send waits ``slow_client_timeout`` seconds is cut off (the error is recorded; its frame
cannot reach a client whose buffers are full). Control messages travel one per frame, data in
batched arrays.
"""

from __future__ import annotations

import asyncio

from streamwarden.simulator.context import ProtocolContext, pause
from streamwarden.simulator.events import AUTH, FAULT_INJECTED
from streamwarden.simulator.messages import (
    OTHER_STREAMS_CHANNELS,
    SUBSCRIBABLE_CHANNELS,
    authenticated,
    connected,
    decode,
    subscription_ack,
)
from streamwarden.simulator.registry import Session

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
        request = decode(frame, session.codec)
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
    if faults.connection_limit:
        ctx.registry.record_auth(session, key_id, "connection_limit")
        ctx.log.info(FAULT_INJECTED, fault="connection_limit", connection_id=session.id)
        await ctx.outbox.error(session, 406)
        return False
    ctx.registry.record_auth(session, key_id, "authorized")
    ctx.log.debug(AUTH, kind=session.kind, connection_id=session.id, outcome="authorized")
    await ctx.outbox.control(session, authenticated())
    return True


def _channels(request: dict[str, object]) -> dict[str, list[str]] | None:
    """The channel -> symbols of a (un)subscribe request; None when it is malformed."""
    changes: dict[str, list[str]] = {}
    for key, value in request.items():
        if key == "action":
            continue
        if key not in SUBSCRIBABLE_CHANNELS or not isinstance(value, list):
            return None
        if not all(isinstance(symbol, str) and symbol for symbol in value):
            return None
        changes[key] = value
    return changes


async def _subscribe(
    session: Session, request: dict[str, object], ctx: ProtocolContext, *, add: bool
) -> None:
    if any(key in OTHER_STREAMS_CHANNELS for key in request):
        await ctx.outbox.error(session, 410)
        return
    changes = _channels(request)
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
    await ctx.outbox.control(session, subscription_ack(current))
