"""The ``streamwarden simulator`` command: the simulator standalone, until Ctrl-C.

::

    streamwarden simulator --port P [--host H] [--fault FAULT ...] [--quote-rate R] [--seed S]
                           [--feed FEED] [--trading-frames text|binary] [--duration SECONDS]

It prints the two URLs and the environment variables that point streamwarden at them, then
serves until SIGINT or SIGTERM (or ``--duration`` seconds) and stops cleanly. A bad ``--fault``
exits 2 with a one-line reason; an address that cannot be bound raises ``SimulatorError``, which
the CLI reports with exit status 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

from streamwarden.simulator.faults import FAULT_SYNTAX, Faults
from streamwarden.simulator.simulator import Simulator
from streamwarden.simulator.stats import STREAM_KINDS

MARKET_DATA_ENV = "STREAMWARDEN_MARKET_DATA_URL"
TRADE_UPDATES_ENV = "STREAMWARDEN_TRADE_UPDATES_URL"
_WAKE_INTERVAL = 1.0
"""Seconds between checks of the duration while waiting for a signal."""


class _FaultAction(argparse.Action):
    """Adds one ``--fault`` to the namespace's :class:`Faults`; a bad one is a usage error."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: str | Sequence[Any] | None, option_string: str | None = None,
    ) -> None:
        try:
            faults = getattr(namespace, self.dest).with_spec(str(values))
        except ValueError as exc:
            parser.error(f"--fault: {exc}")
        setattr(namespace, self.dest, faults)


def _number(kind: type[int] | type[float], maximum: float = 1e9) -> Any:
    """An argparse type: a ``kind`` number in 0..``maximum``."""
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not 0 <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be in 0..{maximum:g}, got {text}")
        return value
    return convert


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulator`` to the command line's subcommands (handler set as a default)."""
    parser = commands.add_parser(
        "simulator", help="the Alpaca protocol simulator, standalone",
        description="Serve Alpaca's market-data v2 (/v2/<feed>) and trading (/stream) "
                    "WebSocket protocols on one port, with scripted faults, until Ctrl-C.",
    )
    parser.add_argument("--port", type=_number(int, 65535), required=True, metavar="P",
                        help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--fault", dest="faults", action=_FaultAction, default=Faults(),
                        metavar="FAULT", help=f"inject a fault, repeatable: {FAULT_SYNTAX}")
    parser.add_argument("--quote-rate", type=_number(float), default=0.0, metavar="R",
                        help="generated quotes per second per subscribed symbol (default 0)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="seed of the generated quote values (default 0)")
    parser.add_argument("--feed", default="iex", help="feed named in the printed URL (iex)")
    parser.add_argument("--trading-frames", choices=("text", "binary"), default="text",
                        help="frame type of the trading stream (default text)")
    parser.add_argument("--duration", type=_number(float), default=None, metavar="SECONDS",
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.set_defaults(handler=run)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT and SIGTERM while inside (main thread only; elsewhere no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _banner(simulator: Simulator, args: argparse.Namespace) -> str:
    market_data, trade_updates = simulator.feed_url(args.feed), simulator.trade_updates_url
    until = f"{args.duration:g} s or Ctrl-C" if args.duration is not None else "Ctrl-C"
    return (
        f"streamwarden simulator listening on {simulator.host}:{simulator.port} "
        f"(faults: {simulator.faults.describe()}; quote rate {args.quote_rate:g}/s; "
        f"seed {args.seed})\n"
        f"  market data    {market_data}   (any /v2/<feed>)\n"
        f"  trade updates  {trade_updates}\n"
        f"Point streamwarden at it:\n"
        f"  export {MARKET_DATA_ENV}={market_data}\n"
        f"  export {TRADE_UPDATES_ENV}={trade_updates}\n"
        f"Any non-empty key id and secret are accepted. Runs until {until}.\n"
    )


def run(args: argparse.Namespace) -> int:
    """Run the simulator until a signal or the duration; returns 0 after a clean stop.

    Raises:
        SimulatorError: the address cannot be bound, or the simulator did not stop in time.
        InvalidInputError: a bad ``--feed``.
    """
    simulator = Simulator(host=args.host, port=args.port, faults=args.faults,
                          quote_rate=args.quote_rate, seed=args.seed,
                          trading_frames=args.trading_frames)
    stop = threading.Event()
    with _stop_on_signals(stop):
        simulator.start()
        try:
            sys.stdout.write(_banner(simulator, args))
            sys.stdout.flush()
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while True:
                left = _WAKE_INTERVAL if deadline is None else deadline - time.monotonic()
                if left <= 0 or stop.wait(min(left, _WAKE_INTERVAL)):
                    break
        finally:
            simulator.stop()
    stats = simulator.stats()
    opened = ", ".join(f"{kind} {stats.kind(kind).opened}" for kind in STREAM_KINDS)
    sys.stdout.write(f"streamwarden simulator stopped (connections opened: {opened})\n")
    sys.stdout.flush()
    return 0
