"""``streamwarden demo``: the whole library at work, with no credentials and no network.

It starts the Alpaca protocol simulator in process, runs three strategies that share one
market-data connection and one trade-updates connection, streams quotes, has the simulator drop
the market-data socket once and watches the SDK reconnect, sends each strategy a fill, releases
everything, and then prints the run's audit trail (by its correlation id), the chain's
verification and where the state diagram was written. With ``--live-endpoints`` and Alpaca
credentials in ``APCA_API_KEY_ID`` / ``APCA_API_SECRET_KEY`` it runs against Alpaca's paper
endpoints instead (no drop, no fills: those are the simulator's).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from streamwarden.audit.log import AuditLog
from streamwarden.audit.report import render_table
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.ids import new_id
from streamwarden.machine.diagram import render
from streamwarden.machine.spec import default_spec
from streamwarden.runtime import ConnectionManager, MarketDataLease, TradeUpdatesLease
from streamwarden.simulator import Simulator

STRATEGIES = {"momentum": ["AAPL", "MSFT"], "pairs": ["MSFT", "SPY"], "meanrev": ["AAPL", "SPY"]}
DEMO_KEY_ID = "PKDEMO00000000000001"
RECOVERY_TIMEOUT = 10.0
REFRESH_SECONDS = 0.1
WIDE_REPORT = 200


@dataclass
class Strategy:
    """One consumer: a market-data lease, a trade-updates lease and what it received."""

    name: str
    symbols: list[str]
    quotes: int = 0
    fills: int = 0
    leases: list[MarketDataLease | TradeUpdatesLease] = field(default_factory=list)

    def on_quote(self, quote: object) -> None:
        self.quotes += 1

    def on_update(self, update: object) -> None:
        self.fills += 1


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``demo`` to the command line's subcommands (handler set as a default)."""
    demo = commands.add_parser(
        "demo", help="three strategies sharing connections, on the simulator (no credentials)",
        description=__doc__.split("\n\n")[1] if __doc__ else None)
    demo.add_argument("--db", default=None, metavar="URL",
                      help="audit database (default STREAMWARDEN_DB_URL or "
                           "sqlite:///./streamwarden-audit.db)")
    demo.add_argument("--seconds", type=float, default=4.0, metavar="S",
                      help="how long the strategies stream (default 4)")
    demo.add_argument("--quote-rate", type=float, default=20.0, metavar="R",
                      help="simulated quotes per second per symbol (default 20)")
    demo.add_argument("--diagram", type=Path, default=Path("streamwarden-lifecycle.mmd"),
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
    for header in ("strategy", "symbols", "quotes", "fills"):
        consumers.add_column(header)
    for strategy in strategies:
        consumers.add_row(strategy.name, " ".join(strategy.symbols), str(strategy.quotes),
                          str(strategy.fills))
    return Group(lifecycles, consumers)


class _Display:
    """The live terminal view, or plain phase lines."""

    def __init__(self, console: Console, manager: ConnectionManager,
                 strategies: list[Strategy], plain: bool) -> None:
        self._console, self._manager, self._strategies = console, manager, strategies
        self._plain = plain or not console.is_terminal
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
            states = ", ".join(f"{lc.kind}={lc.state}/{lc.refs}"
                               for lc in self._manager.health().lifecycles) or "none"
            self._console.print(f"[bold]{phase}[/bold]: connections {states}")
        else:
            self._live.update(self._render())

    def wait(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            if self._live is not None:
                self._live.update(self._render())
            time.sleep(REFRESH_SECONDS)
        return until()


def _reconnected(manager: ConnectionManager) -> bool:
    return any(lc.kind == "market_data" and lc.reconnects >= 1 and lc.state == "running"
               for lc in manager.health().lifecycles)


def _stream(manager: ConnectionManager, creds: Credentials, strategies: list[Strategy], *,
            cid: str, display: _Display, simulator: Simulator | None, seconds: float) -> bool:
    for strategy in strategies:
        strategy.leases = [
            manager.market_data(creds, symbols=strategy.symbols, on_quote=strategy.on_quote,
                                owner=strategy.name, correlation_id=cid),
            manager.trade_updates(creds, on_update=strategy.on_update, owner=strategy.name,
                                  correlation_id=cid),
        ]
    display.show("streaming quotes")
    display.wait(seconds / 2)
    recovered = True
    if simulator is not None:
        display.show("simulator dropped the market-data socket")
        simulator.drop_connections()
        recovered = display.wait(RECOVERY_TIMEOUT, lambda: _reconnected(manager))
        display.show("reconnected" if recovered else "did NOT reconnect")
        for strategy in strategies:
            simulator.publish_trade_update("fill", symbol=strategy.symbols[0], price="100.25")
    display.wait(seconds / 2)
    display.show("releasing")
    for strategy in strategies:
        for lease in strategy.leases:
            lease.release()
    display.wait(RECOVERY_TIMEOUT, lambda: not manager.health().lifecycles)
    display.show("all connections stopped")
    return recovered


def _report(console: Console, audit: AuditLog, cid: str, diagram: Path) -> bool:
    records = audit.query(correlation_id=cid)
    render_table(records, console, title=f"audit trail of correlation id {cid}")
    report = audit.verify()
    verdict = "OK" if report.ok else "BROKEN"
    console.print(f"verify: {verdict}: {report.message} ({audit.url})")
    diagram.write_text(render(default_spec(), "mermaid"), encoding="utf-8")
    console.print(f"state diagram (Mermaid): {diagram.resolve()}")
    return report.ok


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when the connections recovered, stopped and the chain verifies.

    Raises:
        InvalidInputError: with ``--live-endpoints``, when the APCA_* variables are not set.
        AuditError: the audit database cannot be opened.
    """
    # Piped output gets a report wide enough to read rather than the default 80 columns.
    console = Console(width=None if sys.stdout.isatty() else WIDE_REPORT)
    simulator: Simulator | None = None
    if args.live_endpoints:
        creds, settings = Credentials.from_env(), Settings.from_env()
    else:
        simulator = Simulator(quote_rate=args.quote_rate).start()
        creds = Credentials(DEMO_KEY_ID, f"demo-{new_id()}")
        settings = Settings.from_env(market_data_url=simulator.market_data_url,
                                     trade_updates_url=simulator.trade_updates_url)
    # alpaca-py warns "restarting connection" whenever a socket closes, deliberate stops too.
    logging.getLogger("alpaca").setLevel(logging.ERROR)
    cid = f"demo-{new_id()}"
    strategies = [Strategy(name, symbols) for name, symbols in STRATEGIES.items()]
    try:
        with AuditLog.open(args.db, settings=settings) as audit:
            with ConnectionManager(audit=audit, settings=settings) as manager:
                display = _Display(console, manager, strategies, args.plain)
                with display.running():
                    recovered = _stream(manager, creds, strategies, cid=cid, display=display,
                                        simulator=simulator, seconds=args.seconds)
            verified = _report(console, audit, cid, args.diagram)
    finally:
        if simulator is not None:
            simulator.stop()
    received = sum(strategy.quotes for strategy in strategies)
    console.print(f"quotes received by the strategies: {received}")
    return 0 if recovered and verified else 1
