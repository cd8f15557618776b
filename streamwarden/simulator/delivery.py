"""Sending frames to sessions, counting them, and carrying out the ``drop_after`` fault.

Market-data messages (stocks, crypto, options, news) travel as arrays, several per frame when
batched; trading-stream messages one JSON object per frame. A :class:`Batch` encodes its
messages once per codec, however many connections receive them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from streamwarden.simulator.events import FAULT_INJECTED, SLOW_CLIENT
from streamwarden.simulator.messages import ERRORS, Codec, Message, encode, error
from streamwarden.simulator.orders import stream_error
from streamwarden.simulator.registry import Registry, Session
from streamwarden.simulator.stats import TRADE_UPDATES

Frame = bytes | str


def _frames(session: Session, messages: Sequence[Message]) -> list[Frame]:
    if session.kind != TRADE_UPDATES:
        return [encode(messages, session.codec)]
    return [encode(message, session.codec) for message in messages]


class Batch:
    """Data messages to send to one or more sessions, encoded lazily once per codec and kind.

    Thread-safety: used on the simulator's loop only.
    """

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = list(messages)
        self._encoded: dict[tuple[str, Codec], list[Frame]] = {}

    def __len__(self) -> int:
        return len(self.messages)

    def frames(self, session: Session, count: int) -> list[Frame]:
        """The frames carrying the first ``count`` messages, as ``session`` reads them."""
        if count < len(self.messages):
            return _frames(session, self.messages[:count])
        key = (session.kind, session.codec)
        if key not in self._encoded:
            self._encoded[key] = _frames(session, self.messages)
        return self._encoded[key]


class Outbox:
    """Sends control and data messages, keeping the registry's counts.

    Thread-safety: used on the simulator's loop only.
    """

    def __init__(self, registry: Registry, log: structlog.stdlib.BoundLogger,
                 slow_client_timeout: float) -> None:
        self._registry = registry
        self._log = log
        self._slow_client_timeout = slow_client_timeout

    async def control(self, session: Session, *messages: Message) -> bool:
        """Send control messages; False when the connection is closing or closed."""
        if session.connection.state is not State.OPEN:
            # Sending now would make websockets wait for the close and then close the
            # socket itself, which would end a hung connection.
            return False
        try:
            for frame in _frames(session, messages):
                await session.connection.send(frame)
        except ConnectionClosed:
            return False
        self._registry.record_control(session, len(messages))
        return True

    async def error(self, session: Session, code: int) -> bool:
        """Send Alpaca's market-data error ``code``; False when the connection is closed."""
        sent = await self.control(session, error(code))
        if sent:
            self._registry.record_error(session, code, ERRORS[code])
        return sent

    async def stream_error(self, session: Session, text: str) -> bool:
        """Send a trading-stream in-stream error; False when the connection is closed."""
        sent = await self.control(session, stream_error(text))
        if sent:
            self._registry.record_error(session, 0, text)
        return sent

    async def data(self, session: Session, batch: Batch) -> int:
        """Send ``batch`` to ``session``; returns how many messages went out.

        Fewer than all are sent when the ``drop_after`` fault fires, in which case the
        connection is aborted (no close frame) right after the last one.
        """
        if session.connection.state is not State.OPEN:
            return 0
        allowed, drop = self._registry.reserve_data(session, len(batch))
        sent = allowed
        if allowed:
            try:
                for frame in batch.frames(session, allowed):
                    await self._send_data(session, frame)
            except ConnectionClosed:
                sent = 0
            except TimeoutError:  # a slow client: Alpaca's 407, then the connection is cut
                self._registry.record_error(session, 407, ERRORS[407])
                self._log.info(SLOW_CLIENT, connection_id=session.id,
                               seconds=self._slow_client_timeout)
                abort(session)
                return 0
        if drop:
            self._log.info(FAULT_INJECTED, fault="drop_after", connection_id=session.id,
                           kind=session.kind, messages=session.data_messages)
            abort(session)
        return sent

    async def _send_data(self, session: Session, frame: Frame) -> None:
        if session.kind == TRADE_UPDATES:
            await session.connection.send(frame)
            return
        async with asyncio.timeout(self._slow_client_timeout):
            await session.connection.send(frame)

    async def publish(self, sessions: Sequence[Session], batch: Batch) -> list[int]:
        """Send ``batch`` to every session concurrently; returns the counts sent to each."""
        if len(sessions) == 1:  # the common case, without gather's tasks
            return [await self.data(sessions[0], batch)]
        return list(await asyncio.gather(*(self.data(s, batch) for s in sessions)))


def abort(session: Session) -> None:
    """Close ``session``'s TCP connection now, without a close frame."""
    session.connection.transport.abort()
