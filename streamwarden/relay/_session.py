"""One downstream client's outgoing side: a bounded send queue and the task that drains it.

Data messages (already encoded elements) queue up to ``capacity``; the writer sends what has
accumulated as one array frame per turn. A client whose queue is full when a message arrives
cannot keep up: its queue is discarded, it is sent Alpaca's error 407 "slow client" and
closed (aborted if it does not take the close within ``close_timeout``). Nothing here ever
waits for a client on the path that fills queues, so no other client waits for a slow one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamwarden.relay._protocol import Codec, Frame, Message, array, encode, error

SLOW_CLIENT = 407
_BATCH = 1024  # messages per data frame at most


class SendQueue:
    """The send queue and writer of one client connection.

    Thread-safety: use from the relay's event loop only.
    """

    def __init__(self, connection: ServerConnection, codec: Codec, *, capacity: int,
                 close_timeout: float) -> None:
        self._connection = connection
        self._codec = codec
        self._capacity = capacity
        self._close_timeout = close_timeout
        # Each item: an encoded data element, or a whole frame and whether it counts as data.
        self._items: deque[bytes | tuple[Frame, bool]] = deque()
        self._data = 0
        self._wake = asyncio.Event()
        self._cut = False
        self.closing = False
        self._task = asyncio.get_running_loop().create_task(self._write())

    @property
    def cut(self) -> bool:
        """Whether the client was cut off as a slow client."""
        return self._cut

    def control(self, payload: list[Message] | Message) -> None:
        """Queue a control frame carrying ``payload`` (market data: a one-message array;
        the trading stream: one object), after what is queued."""
        if not self.closing:
            self._items.append((encode(payload, self._codec), False))
            self._wake.set()

    def frame(self, frame: Frame) -> None:
        """Queue a data frame built elsewhere (the trading stream's); a full queue cuts the
        client (407)."""
        self._queue_data((frame, True))

    def data(self, element: bytes) -> None:
        """Queue one encoded data message; a full queue cuts the client (407)."""
        self._queue_data(element)

    def _queue_data(self, item: bytes | tuple[Frame, bool]) -> None:
        if self.closing:
            return
        if self._data >= self._capacity:
            self.slow()
            return
        self._data += 1
        self._items.append(item)
        self._wake.set()

    def slow(self) -> None:
        """Cut the client off: discard its queue, send 407, close."""
        self._cut = True
        self._items.clear()
        self._data = 0
        self.control([error(SLOW_CLIENT)])
        self.closing = True
        self._wake.set()
        # The writer may be stuck sending to a client that reads nothing: bound the goodbye.
        asyncio.get_running_loop().call_later(self._close_timeout, self._abort)

    def _abort(self) -> None:
        if not self._task.done():
            self._connection.transport.abort()

    def close(self) -> None:
        """Send what is queued, then close the connection (1001 going away)."""
        self.closing = True
        self._wake.set()

    async def wait_closed(self) -> None:
        """Until the writer is done and the connection closed."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _next_frame(self) -> Frame:
        items = self._items
        head = items[0]
        if isinstance(head, tuple):
            items.popleft()
            self._data -= head[1]
            return head[0]
        batch: list[bytes] = []
        while items and not isinstance(items[0], tuple) and len(batch) < _BATCH:
            element = items.popleft()
            assert isinstance(element, bytes)
            batch.append(element)
        self._data -= len(batch)
        return array(batch, self._codec)

    async def _write(self) -> None:
        connection = self._connection
        try:
            while True:
                while self._items:
                    await connection.send(self._next_frame())
                if self.closing:
                    break
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            return
        await self._close()

    async def _close(self) -> None:
        try:
            await asyncio.wait_for(connection_close(self._connection), self._close_timeout)
        except TimeoutError:
            self._connection.transport.abort()


async def connection_close(connection: ServerConnection) -> None:
    """Close ``connection`` with 1001 (going away)."""
    await connection.close(1001)
