"""``streamwarden demo``: the whole library at work, with no credentials and no network.

It starts the Alpaca protocol simulator in process, runs three strategies that share one
market-data connection and one trade-updates connection, each under its own correlation id and
limited to its own orders (client_order_id prefix), streams quotes, has the simulator drop the
market-data socket once and watches the SDK reconnect, fills one order of each strategy,
releases everything, and then prints the run's audit trail (every correlation id of the run),
the chain's verification and where the state diagram was written. Ctrl-C releases the leases,
closes the connections and ends after the final audit records are written (exit status 130).
With ``--live-endpoints`` and Alpaca credentials in ``APCA_API_KEY_ID`` /
``APCA_API_SECRET_KEY`` it runs against Alpaca's paper endpoints instead (no drop, no fills:
those are the simulator's).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamwarden._signals import INTERRUPTED, signals_set
from streamwarden.arguments import output_file, positive_number
from streamwarden.audit.database import redact_url, resolve_url, url_argument
from streamwarden.audit.log import AuditLog
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.report import render_table
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.ids import new_id
from streamwarden.machine.diagram import render
from streamwarden.machine.spec import default_spec
from streamwarden.runtime import (
    ConnectionManager,
    LifecycleHealth,
    MarketDataLease,
    TradeUpdatesLease,
)
from streamwarden.simulator import Simulator

STRATEGIES = {"momentum": ["AAPL", "MSFT"], "pairs": ["MSFT", "SPY"], "meanrev": ["AAPL", "SPY"]}
DEMO_KEY_ID = "PKDEMO00000000000001"
FILL_PRICE = "100.25"
RECOVERY_TIMEOUT = 10.0
REFRESH_SECONDS = 0.1
WIDE_REPORT = 200


class _InterruptRequestedError(Exception):
    """Ctrl-C was pressed: the run winds down (leases released, manager closed) and ends."""


@dataclass
class Strategy:
    """One consumer: its correlation id, a market-data lease, a trade-updates lease limited to
    its own orders, and what it received (quotes counted, fills by client_order_id)."""

    name: str
    symbols: list[str]
    correlation_id: str
    quotes: int = 0
    fills: list[str] = field(default_factory=list)
    leases: list[MarketDataLease | TradeUpdatesLease] = field(default_factory=list)

    @property
    def order_prefix(self) -> str:
        """The prefix of the client_order_id of every order the strategy submits."""
        return f"{self.name}-"

    @property
    def first_order(self) -> str:
        """The client_order_id of the strategy's order the demo fills."""
        return f"{self.order_prefix}1"

    def on_quote(self, quote: object) -> None:
        self.quotes += 1

    def on_update(self, update: Any) -> None:
        self.fills.append(str(update.order.client_order_id))


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to the command line's subcommands (handler set as a default)."""
    demo = commands.add_parser(
        "demo", help="three strategies sharing connections, on the simulator (no credentials)",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    demo.add_argument("--db", type=url_argument, default=None, metavar="URL",
                      help="audit database (default STREAMWARDEN_DB_URL or "
                           "sqlite:///./streamwarden-audit.db)")
    demo.add_argument("--seconds", type=positive_number, default=4.0, metavar="S",
                      help="how long the strategies stream (default 4)")
    demo.add_argument("--quote-rate", type=positive_number, default=20.0, metavar="R",
                      help="simulated quotes per second per symbol (default 20)")
    demo.add_argument("--diagram", type=output_file, default=Path("streamwarden-lifecycle.mmd"),
                      metavar="FILE", help="where to write the Mermaid state diagram")
    demo.add_argument("--plain", action="store_true",
                      help="print phases as lines instead of the live view")
    demo.add_argument("--live-endpoints", action="store_true",
                      help="use Alpaca's paper endpoints and APCA_* credentials")
    demo.set_defaults(handler=run)


def _view(manager: ConnectionManager, strategies: list[Strategy], phase: str) -> Group:
    lifecycles = Table(title=f"connections: {phase}", header_style="bold")
    for header in ("kind", "lifecycle", "state", "refs", "messages", "reconnects"):
        lifecycles.add_column(header)
    for lc in manager.health().lifecycles:
        lifecycles.add_row(lc.kind, lc.lifecycle_id[-8:], lc.state, str(lc.refs),
                           str(lc.messages), str(lc.reconnects))
    consumers = Table(title="strategies", header_style="bold")
    for header in ("strategy", "symbols", "orders", "quotes", "fills"):
        consumers.add_column(header)
    for strategy in strategies:
        consumers.add_row(strategy.name, " ".join(strategy.symbols), f"{strategy.order_prefix}*",
                          str(strategy.quotes), " ".join(strategy.fills))
    return Group(lifecycles, consumers)


def _states(lifecycles: tuple[LifecycleHealth, ...]) -> str:
    return ", ".join(f"{lc.kind}={lc.state} (refs {lc.refs}, reconnects {lc.reconnects})"
                     for lc in lifecycles) or "none"


class _Display:
    """The live terminal view, or plain phase lines; and the run's pace: its waits end early
    and raise :class:`_InterruptRequestedError` once ``stop`` is set (Ctrl-C)."""

    def __init__(self, console: Console, manager: ConnectionManager,
                 strategies: list[Strategy], *, plain: bool, stop: threading.Event) -> None:
        self._console, self._manager, self._strategies = console, manager, strategies
        self._plain = plain or not console.is_terminal
        self._stop = stop
        self._live: Live | None = None
        self.phase = "starting"

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        if self._plain:
            yield
            return
        with Live(self._render(), console=self._console, refresh_per_second=10) as live:
            self._live = live
            yield
        self._live = None

    def _render(self) -> Group:
        return _view(self._manager, self._strategies, self.phase)

    def show(self, phase: str) -> None:
        self.phase = phase
        if self._live is None:
            states = _states(self._manager.health().lifecycles)
            self._console.print(f"[bold]{phase}[/bold]: connections {states}")
        else:
            self._live.update(self._render())

    def check(self) -> None:
        """Raise :class:`_InterruptRequestedError` if Ctrl-C was pressed."""
        if self._stop.is_set():
            raise _InterruptRequestedError

    def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        """Wait ``seconds`` or until ``until()`` holds (its last value); raise on Ctrl-C."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            if self._live is not None:
                self._live.update(self._render())
            self._stop.wait(REFRESH_SECONDS)
            self.check()
        return until()


def _market_data(manager: ConnectionManager, holds: Callable[[LifecycleHealth], bool]) -> bool:
    return any(lc.kind == "market_data" and holds(lc) for lc in manager.health().lifecycles)


def _drop_and_fill(manager: ConnectionManager, simulator: Simulator,
                   strategies: list[Strategy], display: _Display) -> bool:
    """Drop the market-data socket, show it down and then back; fill one order per strategy.
    True when it reconnected and each strategy received exactly its own fill."""
    simulator.drop_connections()
    # alpaca-py waits half a second or more before it reconnects: long enough to see the drop.
    dropped = display.wait(RECOVERY_TIMEOUT,
                           lambda: _market_data(manager, lambda lc: lc.state != "running"))
    display.show("simulator dropped the market-data socket" if dropped
                 else "the market-data socket did NOT drop")
    recovered = dropped and display.wait(RECOVERY_TIMEOUT, lambda: _market_data(
        manager, lambda lc: lc.state == "running" and lc.reconnects >= 1))
    display.show("reconnected" if recovered else "did NOT reconnect")
    for strategy in strategies:
        simulator.publish_trade_update("fill", symbol=strategy.symbols[0], price=FILL_PRICE,
                                       client_order_id=strategy.first_order)
    display.wait(RECOVERY_TIMEOUT, lambda: all(strategy.fills for strategy in strategies))
    display.show("filled one order of each strategy")
    return recovered and all(strategy.fills == [strategy.first_order] for strategy in strategies)


def _acquire(manager: ConnectionManager, creds: Credentials, strategy: Strategy) -> None:
    strategy.leases.append(manager.market_data(
        creds, symbols=strategy.symbols, on_quote=strategy.on_quote, owner=strategy.name,
        correlation_id=strategy.correlation_id))
    strategy.leases.append(manager.trade_updates(
        creds, on_update=strategy.on_update, client_order_id_prefix=strategy.order_prefix,
        owner=strategy.name, correlation_id=strategy.correlation_id))


def _stream(manager: ConnectionManager, creds: Credentials, strategies: list[Strategy], *,
            display: _Display, simulator: Simulator | None, seconds: float) -> bool:
    ok = True
    try:
        for strategy in strategies:
            _acquire(manager, creds, strategy)
            display.check()
        display.show("streaming quotes")
        display.wait(seconds / 2)
        if simulator is not None:
            ok = _drop_and_fill(manager, simulator, strategies, display)
        display.wait(seconds / 2)
    finally:  # on Ctrl-C too: each release is recorded before the manager closes
        display.show("releasing")
        for strategy in strategies:
            for lease in strategy.leases:
                lease.release()
    stopped = display.wait(RECOVERY_TIMEOUT, lambda: not manager.health().lifecycles)
    display.show("all connections stopped" if stopped else "connections did NOT stop")
    return ok and stopped


def _run_records(audit: AuditLog, run_id: str, strategies: list[Strategy]) -> list[AuditRecord]:
    """Every record of the run: the manager's correlation id and each strategy's, by seq."""
    ids = [run_id, *(strategy.correlation_id for strategy in strategies)]
    records = [record for cid in ids for record in audit.query(correlation_id=cid)]
    return sorted(records, key=lambda record: record.seq or 0)


def _report(console: Console, audit: AuditLog, run_id: str, strategies: list[Strategy]) -> bool:
    render_table(_run_records(audit, run_id, strategies), console,
                 title=f"audit trail of run {run_id} (correlation ids {run_id} and "
                       f"{run_id}-<strategy>)")
    report = audit.verify()
    verdict = "OK" if report.ok else "BROKEN"
    console.print(f"verify: {verdict}: {report.message} ({audit.url})")
    return report.ok


def _write_diagram(console: Console, path: Path) -> bool:
    try:
        path.write_text(render(default_spec(), "mermaid"), encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(f"streamwarden: cannot write the state diagram to {path}: "
                         f"{exc.strerror or exc}\n")
        return False
    console.print(f"state diagram (Mermaid): {path.resolve()}")
    return True


def _endpoints(args: argparse.Namespace,
               settings: Settings) -> tuple[Simulator | None, Credentials, Settings]:
    if args.live_endpoints:
        return None, Credentials.from_env(), settings
    simulator = Simulator(quote_rate=args.quote_rate, reaper_window=0).start()
    return simulator, Credentials(DEMO_KEY_ID, f"demo-{new_id()}"), settings.replace(
        market_data_url=simulator.market_data_url, trade_updates_url=simulator.trade_updates_url)


def _run(args: argparse.Namespace, settings: Settings, console: Console,
         stop: threading.Event) -> int:
    simulator, creds, settings = _endpoints(args, settings)
    # alpaca-py warns "restarting connection" whenever a socket closes, deliberate stops too.
    logging.getLogger("alpaca").setLevel(logging.ERROR)
    run_id = f"demo-{new_id()}"
    strategies = [Strategy(name, symbols, f"{run_id}-{name}")
                  for name, symbols in STRATEGIES.items()]
    try:
        with AuditLog.open(args.db, settings=settings) as audit:
            with ConnectionManager(audit=audit, settings=settings,
                                   correlation_id=run_id) as manager:
                display = _Display(console, manager, strategies, plain=args.plain, stop=stop)
                with display.running():
                    ok = _stream(manager, creds, strategies, display=display,
                                 simulator=simulator, seconds=args.seconds)
            verified = _report(console, audit, run_id, strategies)
    finally:
        if simulator is not None:
            simulator.stop()
    wrote = _write_diagram(console, args.diagram)
    for strategy in strategies:
        console.print(f"{strategy.name} ({' '.join(strategy.symbols)}, correlation id "
                      f"{strategy.correlation_id}): {strategy.quotes} quotes, fills: "
                      f"{' '.join(strategy.fills) or 'none'}")
    if stop.is_set():
        raise _InterruptRequestedError
    return 0 if ok and verified and wrote else 1


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the connections recovered, each strategy received exactly its own
    fill, everything stopped, the chain verifies and the diagram was written; 1 otherwise;
    130 after Ctrl-C (one line on standard error, once the leases are released, the
    connections closed and the final records written; a second Ctrl-C changes nothing).

    Thread-safety: run it from one thread at a time; Ctrl-C is handled only when that is the
    main thread.

    Raises:
        InvalidInputError: a malformed ``STREAMWARDEN_*`` variable; with ``--live-endpoints``,
            when the APCA_* variables are not set.
        AuditError: the audit database cannot be opened.
    """
    # Piped output gets a report wide enough to read rather than the default 80 columns.
    console = Console(width=None if sys.stdout.isatty() else WIDE_REPORT)
    settings = Settings.from_env()
    where = redact_url(resolve_url(args.db, settings))
    stop = threading.Event()
    with signals_set(stop, signal.SIGINT):
        try:
            return _run(args, settings, console, stop)
        except _InterruptRequestedError:
            sys.stderr.write(f"interrupted: leases released, connections closed, audit trail "
                             f"written to {where}\n")
            return INTERRUPTED
