"""Alpaca's trading stream protocol (``/stream``), server side, for one connection.

The exchange, as Alpaca documents it (JSON; text or binary frames both accepted from clients,
the simulator answers in the frame type it was configured with)::

    client  {"action":"authenticate","data":{"key_id":"...","secret_key":"..."}}
            (or the newer form {"action":"auth","key":"...","secret":"..."})
    server  {"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}
    client  {"action":"listen","data":{"streams":["trade_updates"]}}
    server  {"stream":"listening","data":{"streams":["trade_updates"]}}
    server  {"stream":"trade_updates","data":{"event":"fill",...,"order":{...}}}

``listen`` replaces the set of streams (unknown streams are left out of the acknowledgement);
before authorization it is answered ``{"stream":"authorization","data":{"status":"unauthorized",
"action":"listen"}}``. A frame that is not a JSON object with a known action is answered with
``{"action":"error","data":{"error_message":...}}`` and the connection is closed.
"""

from __future__ import annotations

from streamwarden._frames import decode_frame
from streamwarden.simulator.context import ProtocolContext, pause
from streamwarden.simulator.events import AUTH, FAULT_INJECTED
from streamwarden.simulator.orders import TRADE_UPDATES, authorization, listening
from streamwarden.simulator.registry import Session
from streamwarden.simulator.stats import AuthOutcome

STREAMS_CHANNEL = "streams"
"""The subscription channel under which a trading session's listened streams are recorded."""


async def serve_trading(session: Session, ctx: ProtocolContext) -> None:
    """Speak the trading-stream protocol on ``session`` until either side closes it.

    Raises:
        websockets.exceptions.ConnectionClosed: the connection closed while reading.
    """
    while await _handle(session, await session.connection.recv(), ctx):
        pass
    await session.connection.close()


async def _handle(session: Session, frame: bytes | str, ctx: ProtocolContext) -> bool:
    """Answer one client frame; False when the connection must be closed."""
    try:
        request = decode_frame(frame, "json")
    except ValueError:
        request = None
    if not isinstance(request, dict):
        await ctx.outbox.stream_error(session, "invalid syntax")
        return False
    action = request.get("action")
    data = request.get("data")
    if action == "authenticate" and isinstance(data, dict):
        return await _authenticate(session, data.get("key_id"), data.get("secret_key"), ctx)
    if action == "auth":
        return await _authenticate(session, request.get("key"), request.get("secret"), ctx)
    if action == "listen" and isinstance(data, dict):
        return await _listen(session, data.get("streams"), ctx)
    await ctx.outbox.stream_error(session, "invalid syntax")
    return False


async def _authenticate(
    session: Session, key: object, secret: object, ctx: ProtocolContext
) -> bool:
    faults = ctx.registry.faults
    if faults.slow_start:
        ctx.log.info(FAULT_INJECTED, fault="slow_start", connection_id=session.id,
                     seconds=faults.slow_start)
        if await pause(session.connection, faults.slow_start):
            return False
    accepted = not faults.auth_failure and ctx.accounts.accepts(key, secret)
    outcome: AuthOutcome = "authorized" if accepted else "auth_failed"
    ctx.registry.record_auth(session, key if isinstance(key, str) else None, outcome)
    ctx.log.info(AUTH, kind=session.kind, connection_id=session.id, outcome=outcome,
                 fault=faults.auth_failure)
    await ctx.outbox.control(session, authorization(authorized=accepted))
    return True


async def _listen(session: Session, streams: object, ctx: ProtocolContext) -> bool:
    if not session.authenticated:
        await ctx.outbox.control(session, authorization(authorized=False, action="listen"))
        return True
    if not isinstance(streams, list):
        await ctx.outbox.stream_error(session, "invalid syntax")
        return False
    available = sorted({s for s in streams if s == TRADE_UPDATES})
    ctx.registry.replace_subscription(session, STREAMS_CHANNEL, available)
    await ctx.outbox.control(session, listening(available))
    return True
