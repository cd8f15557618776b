"""The simulator's thread: its own event loop running the server, a bounded start and stop, and
calls into the loop from other threads with a timeout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog

from streamwarden.clock import Clock
from streamwarden.simulator._errors import SimulatorError
from streamwarden.simulator.accounts import Accounts
from streamwarden.simulator.context import ProtocolContext
from streamwarden.simulator.delivery import Outbox
from streamwarden.simulator.messages import Codec
from streamwarden.simulator.publisher import Publisher
from streamwarden.simulator.registry import Registry
from streamwarden.simulator.server import SimulatorServer

if TYPE_CHECKING:
    from streamwarden.simulator._control import Control
from streamwarden.simulator._trade_events import TradeEventLog

T = TypeVar("T")
THREAD_NAME = "streamwarden-simulator"
_CONTROL_WORKERS = 2
"""Control requests carried out at once (each waits for the loop, briefly)."""


@dataclass(frozen=True)
class ServerConfig:
    """What the server thread builds its server from."""

    host: str
    port: int
    registry: Registry
    accounts: Accounts
    auth_timeout: float
    trading_codec: Codec
    seed: int
    clock: Clock
    log: structlog.stdlib.BoundLogger
    control: Control
    trade_events: TradeEventLog
    slow_client_timeout: float = 10.0


class Runtime:
    """Owns the server thread and its loop.

    States: ``new`` -> ``running`` (after a successful :meth:`start`) -> ``stopped``; a failed
    start also ends in ``stopped``. A runtime runs once.

    Thread-safety: every method may be called from any thread (no caller code ever runs on
    the runtime's own); start and stop are serialised by a lock.
    """

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._lifecycle = threading.Lock()
        self.state: Literal["new", "running", "stopped"] = "new"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._abandoned = threading.Event()
        self._startup_error: Exception | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.publisher: Publisher | None = None
        """Set on the loop before the server listens; use it only through :meth:`call`."""
        self.port: int | None = None
        """The bound port, once listening."""
        self._grace = 0.0

    def start(self, timeout: float) -> None:
        """Start the thread; return once the port is bound.

        Raises:
            SimulatorError: already started, the address cannot be bound, or not listening
                within ``timeout`` seconds (the thread is then told to stop once it listens).
        """
        with self._lifecycle:
            if self.state != "new":
                raise SimulatorError("a simulator can be started only once",
                                     operation="simulator.start")
            self.state = "stopped"  # unless it starts
            thread = threading.Thread(target=self._run_thread, name=THREAD_NAME, daemon=True)
            self._thread = thread
            thread.start()
            if not self._ready.wait(timeout):
                self._abandoned.set()
                self._request_stop()
                raise SimulatorError(f"simulator not listening within {timeout:g} s",
                                     operation="simulator.start")
            if self._startup_error is not None:
                thread.join(timeout)
                config = self._config
                raise SimulatorError(
                    f"cannot listen on {config.host}:{config.port}: {self._startup_error}",
                    operation="simulator.start",
                ) from self._startup_error
            self.state = "running"

    def stop(self, timeout: float) -> bool:
        """Shut the server down (half of ``timeout`` is the connections' grace) and join the
        thread; returns False when there was nothing to stop.

        Raises:
            SimulatorError: the thread did not end within ``timeout`` seconds (the state stays
                ``running``: call again to wait longer).
        """
        with self._lifecycle:
            thread = self._thread
            if self.state != "running" or thread is None:
                return False
            self._grace = timeout / 2
            self._request_stop()
            thread.join(timeout)
            if thread.is_alive():
                raise SimulatorError(f"simulator did not stop within {timeout:g} s",
                                     operation="simulator.stop")
            self.state = "stopped"
            return True

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # reported by start(); the loop ends either way
            self._startup_error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        config = self._config
        stopping = asyncio.Event()
        outbox = Outbox(config.registry, config.log, config.slow_client_timeout)
        publisher = Publisher(config.registry, outbox, config.seed, config.clock)
        ctx = ProtocolContext(config.registry, outbox, config.accounts, config.auth_timeout,
                              config.log)
        server = SimulatorServer(config.host, config.port, ctx, publisher, config.trading_codec,
                                 control=config.control,
                                 trade_events=config.trade_events)
        self.publisher, self._stopping = publisher, stopping
        self._loop = asyncio.get_running_loop()
        # Control requests call the simulator from these threads; asyncio.run joins them.
        self._loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            _CONTROL_WORKERS, thread_name_prefix=f"{THREAD_NAME}-control"))
        await server.run(self._started, stopping, lambda: self._grace)

    def _started(self, port: int) -> None:
        self.port = port
        if self._abandoned.is_set() and self._stopping is not None:
            self._stopping.set()
        self._ready.set()

    def _request_stop(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)

    def wake_generator(self) -> None:
        """Make the quote generator re-read its rate now (no-op when not running)."""
        loop, publisher = self._loop, self.publisher
        if loop is not None and publisher is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(publisher.wake)

    def call(self, operation: str, factory: Callable[[Publisher], Coroutine[Any, Any, T]],
             timeout: float) -> T:
        """Run ``factory(publisher)`` on the loop; wait at most ``timeout`` s for its result.

        Raises:
            SimulatorError: not running (or the loop ended), or not done within ``timeout``
                seconds (the coroutine is then cancelled).
        """
        loop, publisher = self._loop, self.publisher
        if self.state != "running" or loop is None or publisher is None:
            raise SimulatorError("the simulator is not running", operation=operation)
        coroutine = factory(publisher)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:
            coroutine.close()
            raise SimulatorError("the simulator stopped", operation=operation) from None
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise SimulatorError(f"not done within {timeout:g} s", operation=operation) from None
        except concurrent.futures.CancelledError:
            raise SimulatorError("the simulator stopped", operation=operation) from None
