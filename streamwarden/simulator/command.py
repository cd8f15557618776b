"""The ``streamwarden simulator`` command: the simulator standalone, until Ctrl-C, and its
control from another process.

::

    streamwarden simulator --port P [--host H] [--fault FAULT ...] [--quote-rate R] [--seed S]
                           [--feed FEED] [--trading-frames text|binary] [--duration SECONDS]
    streamwarden simulator publish quote|trade|bar|fill --url http://HOST:PORT ...
    streamwarden simulator drop|stats --url http://HOST:PORT ...

Serving, it prints the URLs, the environment variables that point streamwarden at them and
example control commands, then serves until SIGINT or SIGTERM (or ``--duration`` seconds) and
stops cleanly. It generates :data:`DEFAULT_QUOTE_RATE` quotes per second per subscribed symbol
unless ``--quote-rate`` says otherwise (0 turns them off). A bad ``--fault``, serving without
``--port``, and a serving option given to a control subcommand exit 2 with a one-line reason;
an address that cannot be bound raises ``SimulatorError``, which the CLI reports with exit
status 1. The control subcommands are :mod:`streamwarden.simulator._control_command`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from streamwarden._signals import signals_set
from streamwarden.arguments import bounded_number, positive_int
from streamwarden.simulator._control_command import add_control_commands
from streamwarden.simulator.faults import FAULT_SYNTAX, Faults
from streamwarden.simulator.stats import STREAM_KINDS

if TYPE_CHECKING:
    from streamwarden.simulator.simulator import Simulator

MARKET_DATA_ENV = "STREAMWARDEN_MARKET_DATA_URL"
CRYPTO_DATA_ENV = "STREAMWARDEN_CRYPTO_DATA_URL"
OPTION_DATA_ENV = "STREAMWARDEN_OPTION_DATA_URL"
NEWS_ENV = "STREAMWARDEN_NEWS_URL"
TRADE_UPDATES_ENV = "STREAMWARDEN_TRADE_UPDATES_URL"
DEFAULT_QUOTE_RATE = 1.0
"""Generated quotes per second per subscribed symbol when ``--quote-rate`` is not given."""
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


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``simulator`` to the command line's subcommands (handler set as a default)."""
    parser = commands.add_parser(
        "simulator", help="the Alpaca protocol simulator, standalone",
        usage="%(prog)s --port P [--host H] [--fault FAULT ...] [--quote-rate R] [--seed S]\n"
              "           [--feed FEED] [--trading-frames {text,binary}] [--duration SECONDS]\n"
              "       %(prog)s {publish,drop,stats} ... --url http://HOST:PORT ...",
        description="Serve Alpaca's market-data v2 (/v2/<feed>) and trading (/stream) "
                    "WebSocket protocols on one port, with scripted faults, until Ctrl-C. "
                    "With a subcommand, control a running simulator from another process "
                    "instead: publish messages into it, drop its connections, read its stats.",
    )
    serving = [
        parser.add_argument("--port", type=bounded_number(int, 65535), metavar="P",
                            help="port to listen on (0 picks a free one); required to serve"),
        parser.add_argument("--host", default="127.0.0.1", metavar="H",
                            help="address to listen on (default 127.0.0.1)"),
        parser.add_argument("--fault", dest="faults", action=_FaultAction, default=Faults(),
                            metavar="FAULT",
                            help=f"inject a fault, repeatable: {FAULT_SYNTAX}"),
        parser.add_argument("--quote-rate", type=bounded_number(float),
                            default=DEFAULT_QUOTE_RATE, metavar="R",
                            help=f"generated quotes per second per subscribed symbol (default "
                                 f"{DEFAULT_QUOTE_RATE:g}; 0 turns them off)"),
        parser.add_argument("--seed", type=int, default=0, metavar="S",
                            help="seed of the generated quote values (default 0)"),
        parser.add_argument("--feed", default="iex", help="feed named in the printed URL (iex)"),
        parser.add_argument("--trading-frames", choices=("text", "binary"), default="text",
                            help="frame type of the trading stream (default text)"),
        parser.add_argument("--reaper-window", type=bounded_number(float), default=90.0,
                            metavar="SECONDS",
                            help="seconds a market-data socket dropped without a close "
                                 "handshake still holds its account's slot: reconnects get "
                                 "error 406 meanwhile, as on Alpaca (default 90; 0 frees it "
                                 "at once)"),
        parser.add_argument("--connect-rate-limit", type=positive_int, default=None,
                            metavar="N",
                            help="answer WebSocket upgrades beyond N per endpoint per second "
                                 "with HTTP 429 and Retry-After (default: no cap)"),
        parser.add_argument("--duration", type=bounded_number(float), default=None,
                            metavar="SECONDS",
                            help="stop after this many seconds (default: run until Ctrl-C)"),
    ]
    add_control_commands(parser.add_subparsers(
        dest="control", metavar="CONTROL", prog=parser.prog,
        title="control a running simulator (each takes --url http://HOST:PORT)"))
    parser.set_defaults(handler=partial(_dispatch, parser, serving))


def _dispatch(parser: argparse.ArgumentParser, serving: list[argparse.Action],
              args: argparse.Namespace) -> int:
    """Serve, or run the control subcommand given. Serving without ``--port``, or a serving
    option with a control subcommand, is a usage error (``parser.error``: exit 2)."""
    if args.control is None:
        if args.port is None:
            parser.error("the following arguments are required: --port")
        return run(args)
    given = [action.option_strings[0] for action in serving
             if getattr(args, action.dest) != action.default]
    if given:
        parser.error(f"serving options ({', '.join(given)}) do not apply to '{args.control}', "
                     f"which controls the simulator at --url")
    handler: Callable[[argparse.Namespace], int] = args.control_handler
    return handler(args)



def _banner(simulator: Simulator, args: argparse.Namespace) -> str:
    market_data, trade_updates = simulator.feed_url(args.feed), simulator.trade_updates_url
    control = simulator.control_url
    until = f"{args.duration:g} s or Ctrl-C" if args.duration is not None else "Ctrl-C"
    return (
        f"streamwarden simulator listening on {simulator.host}:{simulator.port} "
        f"(faults: {simulator.faults.describe()}; quote rate {simulator.quote_rate:g}/s; "
        f"seed {args.seed}; reaper window {args.reaper_window:g} s; upgrades per endpoint "
        f"and second: {args.connect_rate_limit or 'no cap'})\n"
        f"  market data    {market_data}   (any /v2/<feed>)\n"
        f"  trade updates  {trade_updates}\n"
        f"  crypto         {simulator.crypto_data_url}\n"
        f"  options        {simulator.option_data_url()}   (or /v1beta1/opra; MessagePack)\n"
        f"  news           {simulator.news_url}\n"
        f"  control        {control}/control/<action>   (HTTP, from loopback only)\n"
        f"Point streamwarden at it:\n"
        f"  export {MARKET_DATA_ENV}={market_data}\n"
        f"  export {TRADE_UPDATES_ENV}={trade_updates}\n"
        f"  export {CRYPTO_DATA_ENV}={simulator.crypto_data_url}\n"
        f"  export {OPTION_DATA_ENV}={simulator.option_data_url()}\n"
        f"  export {NEWS_ENV}={simulator.news_url}\n"
        f"Publish into it from another shell:\n"
        f"  streamwarden simulator publish quote --url {control} --symbol AAPL "
        f"--bid 187.20 --ask 187.22\n"
        f"  streamwarden simulator publish fill --url {control} --symbol AAPL --qty 1 "
        f"--price 187.21 --client-order-id my-order-1\n"
        f"Any non-empty key id and secret are accepted. Runs until {until}.\n"
    )


def run(args: argparse.Namespace) -> int:
    """Run the simulator until a signal or the duration; returns 0 after a clean stop.

    Raises:
        SimulatorError: the address cannot be bound, or the simulator did not stop in time.
        InvalidInputError: a bad ``--feed``.
    """
    # Imported here: the control subcommands do without the server and start faster.
    from streamwarden.simulator.simulator import Simulator  # noqa: PLC0415

    simulator = Simulator(host=args.host, port=args.port, faults=args.faults,
                          quote_rate=args.quote_rate, seed=args.seed,
                          reaper_window=args.reaper_window,
                          connect_rate_limit=args.connect_rate_limit,
                          trading_frames=args.trading_frames)
    stop = threading.Event()
    with signals_set(stop, signal.SIGINT, signal.SIGTERM):
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
