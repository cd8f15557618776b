"""``streamwarden simulator publish|drop|stats``: a standalone simulator in one process, driven
from others, with real alpaca-py clients receiving what was published."""

from __future__ import annotations

import json
import os
import queue
import re
import runpy
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.enums import TradeEvent
from alpaca.trading.stream import TradingStream

from streamwarden import __version__
from streamwarden.cli import _parser, main
from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Simulator, SimulatorError
from streamwarden.simulator._control_command import request
from tests.simulator.conftest import (
    BOUND,
    KEY_ID,
    SECRET,
    Received,
    SdkRunner,
    non_loopback_address,
    wait_connected,
)

STARTUP = 30.0
"""Bound for a new Python process to import streamwarden and answer (slow on a busy machine)."""
# Without pytest-cov's subprocess measurement: it would mix the whole package into the
# simulator's coverage report.
ENV = {name: value for name, value in os.environ.items()
       if not name.startswith(("COV_CORE", "COVERAGE_"))} | {"PYTHONUNBUFFERED": "1"}
README = Path(__file__).resolve().parents[2] / "README.md"


def streamwarden(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamwarden ARGS`` in a new process."""
    return subprocess.run([sys.executable, "-m", "streamwarden", *args], capture_output=True,
                          text=True, timeout=STARTUP, env=ENV, check=False)


class Standalone:
    """``python -m streamwarden simulator --port 0 ARGS`` in a subprocess, read from its banner
    (its standard error goes to the same pipe)."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamwarden", "simulator", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="test-standalone-stdout", daemon=True).start()
        try:
            self.banner = self._until("Runs until")
            found = re.search(r"listening on \S+:(\d+) \(.*quote rate (\S+)/s", self.banner)
            assert found is not None, self.banner
        except BaseException:
            self.process.kill()
            self.process.wait(BOUND)
            raise
        self.port, self.quote_rate = int(found[1]), float(found[2])
        self.url = f"http://127.0.0.1:{self.port}"
        self.market_data_url = f"ws://127.0.0.1:{self.port}/v2/iex"
        self.trade_updates_url = f"ws://127.0.0.1:{self.port}/stream"

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def _until(self, text: str) -> str:
        lines: list[str] = []
        deadline = time.monotonic() + STARTUP
        while not lines or text not in lines[-1]:
            try:
                lines.append(self._lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {STARTUP} s: {lines}") from None
        return "".join(lines)

    def stop(self) -> str:
        """SIGTERM, then the rest of its output; killed if it does not stop in time."""
        try:
            self.process.terminate()
            self.process.wait(BOUND)
            return self._until("stopped")
        finally:
            self.process.kill()
            self.process.wait(BOUND)


@contextmanager
def standalone_simulator(*args: str) -> Iterator[Standalone]:
    sim = Standalone(*args)
    try:
        yield sim
    finally:
        output = sim.stop()
    assert sim.process.returncode == 0 and "Traceback" not in output, output


@pytest.fixture(scope="module")
def standalone() -> Iterator[Standalone]:
    """One standalone simulator with no flags but the port (so the default quote rate) and
    ``--reaper-window 0`` (tests reconnect right after the drops of others)."""
    with standalone_simulator("--reaper-window", "0") as sim:
        yield sim


def wait_listening(url: str, kind: str, channel: str, symbol: str) -> None:
    """Wait until an authenticated connection of ``kind`` has ``symbol`` on ``channel``."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        for connection in request(url, "stats", {})["open_connections"]:
            if connection["kind"] == kind and connection["authenticated"] \
                    and symbol in connection["subscription"].get(channel, []):
                return
        time.sleep(0.02)
    raise AssertionError(f"no {kind} connection listening to {symbol} within {BOUND} s")


@contextmanager
def running(stream: Any, url: str, kind: str) -> Iterator[None]:
    """Run an alpaca-py stream in a thread; stop it within a bound, even on failure."""
    thread = threading.Thread(target=stream.run, name=f"test-sdk-{kind}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        if stream._loop is not None and thread.is_alive():
            stopper = threading.Thread(target=stream.stop, name="test-sdk-stopper", daemon=True)
            stopper.start()
            stopper.join(BOUND)
            # The SDK notices stop() only when its receive loop wakes: wake it now.
            request(url, "drop", {"kind": kind})
        thread.join(BOUND)
        assert not thread.is_alive(), f"SDK {kind} thread still running after {BOUND} s"


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    return line


# A standalone simulator in a subprocess, the CLI in others, alpaca-py clients here.


def test_fill_published_from_another_process_reaches_trading_stream(
    standalone: Standalone,
) -> None:
    stream, received = TradingStream(KEY_ID, SECRET, paper=True,
                                     url_override=standalone.trade_updates_url), Received()
    stream.subscribe_trade_updates(received.handle)
    with running(stream, standalone.url, TRADE_UPDATES):
        wait_listening(standalone.url, TRADE_UPDATES, "streams", "trade_updates")
        done = streamwarden("simulator", "publish", "fill", "--url", standalone.url,
                            "--symbol", "AAPL", "--qty", "2", "--price", "187.25",
                            "--client-order-id", "momentum-7")
        assert (done.returncode, done.stdout, done.stderr) == (
            0, "fill AAPL sent to 1 connection\n", "")
        (update,) = received.wait(1)

    assert update.event == TradeEvent.FILL
    assert (update.order.client_order_id, update.price, update.qty) == ("momentum-7", 187.25, 2)
    assert update.order.symbol == "AAPL"


def test_quote_published_from_another_process_reaches_stock_data_stream(
    standalone: Standalone,
) -> None:
    stream, received = StockDataStream(KEY_ID, SECRET,
                                       url_override=standalone.market_data_url), Received()
    stream.subscribe_quotes(received.handle, "QTST")
    with running(stream, standalone.url, MARKET_DATA):
        wait_listening(standalone.url, MARKET_DATA, "quotes", "QTST")
        done = streamwarden("simulator", "publish", "quote", "--url", standalone.url,
                            "--symbol", "QTST", "--bid", "123.45", "--ask", "123.47",
                            "--bid-size", "3")
        assert (done.returncode, done.stdout) == (0, "quote QTST sent to 1 connection\n")
        # Generated quotes arrive too (the default rate): find the published one.
        quote = received.first(lambda q: q.bid_price == 123.45)

    assert (quote.symbol, quote.ask_price, quote.bid_size) == ("QTST", 123.47, 3)


def test_the_default_quote_rate_sends_quotes_with_no_flags(standalone: Standalone) -> None:
    assert standalone.quote_rate == 1.0
    stream, received = StockDataStream(KEY_ID, SECRET, raw_data=True,
                                       url_override=standalone.market_data_url), Received()
    stream.subscribe_quotes(received.handle, "GENQ")
    with running(stream, standalone.url, MARKET_DATA):
        first, second = received.wait(2, timeout=2 * BOUND)  # one a second, after connecting

    assert (first["S"], second["S"]) == ("GENQ", "GENQ")
    assert first["t"] != second["t"] and 0 < first["bp"] < first["ap"]


def test_refused_input_exits_1_and_publishes_nothing(standalone: Standalone) -> None:
    stream, received = TradingStream(KEY_ID, SECRET, paper=True,
                                     url_override=standalone.trade_updates_url), Received()
    stream.subscribe_trade_updates(received.handle)
    with running(stream, standalone.url, TRADE_UPDATES):
        wait_listening(standalone.url, TRADE_UPDATES, "streams", "trade_updates")
        refused = streamwarden("simulator", "publish", "fill", "--url", standalone.url,
                               "--symbol", "AAPL", "--client-order-id", "refused")
        done = streamwarden("simulator", "publish", "fill", "--url", standalone.url,
                            "--symbol", "AAPL", "--event", "canceled",
                            "--client-order-id", "accepted")
        assert done.returncode == 0, done.stderr
        (update,) = received.wait(1)

    assert one_line_error(refused) == (
        "streamwarden: InvalidInputError: the simulator refused trade_update: bad trade "
        "update: a fill event needs a price (operation=simulator.control.trade_update)")
    assert refused.stdout == ""
    assert (update.event, update.order.client_order_id) == (TradeEvent.CANCELED, "accepted")


def test_unreachable_simulator_exits_1_with_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    done = streamwarden("simulator", "stats", "--url", f"http://127.0.0.1:{port}")
    assert one_line_error(done) == (
        f"streamwarden: SimulatorError: cannot reach the simulator at http://127.0.0.1:{port}: "
        f"Connection refused (operation=simulator.control.stats)")


@pytest.mark.parametrize(("args", "reason"), [
    (["publish", "quote", "--symbol", "AAPL", "--bid", "1", "--ask", "2"],
     "the following arguments are required: --url"),
    (["publish", "fill", "--url", "http://127.0.0.1:1", "--symbol", "AAPL", "--price", "x"],
     "argument --price: expected a number, got 'x'"),
])
def test_bad_arguments_exit_2_in_a_new_process(args: list[str], reason: str) -> None:
    done = streamwarden("simulator", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (error,) = done.stderr.splitlines()
    assert f"error: {reason} (see streamwarden simulator publish " in error


def test_peers_not_on_loopback_are_refused() -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    with standalone_simulator("--host", "0.0.0.0") as sim:
        assert "(HTTP, from loopback only)" in sim.banner
        done = streamwarden("simulator", "drop", "--url", f"http://{address}:{sim.port}")
        assert one_line_error(done) == (
            "streamwarden: SimulatorError: the simulator refused drop: control requests are "
            "answered only from loopback (HTTP 403) (operation=simulator.control.drop)")
        assert request(sim.url, "stats", {})["kinds"][MARKET_DATA]["drops"] == 0


# The same commands in this process, against an in-process simulator.


def test_every_command_prints_what_it_did(
    sim: Simulator, sdk: SdkRunner, capsys: pytest.CaptureFixture[str],
) -> None:
    market, trading = sdk.market_data(raw_data=True), sdk.trading(raw_data=True)
    received = Received()
    market.subscribe_trades(received.handle, "AAPL")
    market.subscribe_bars(received.handle, "AAPL")
    trading.subscribe_trade_updates(received.handle)
    sdk.run(market)
    sdk.run(trading)
    wait_connected(sim, MARKET_DATA, channel="bars")
    wait_connected(sim, TRADE_UPDATES, channel="streams")
    url = ["--url", sim.control_url]

    commands = [
        ["publish", "trade", *url, "--symbol", "AAPL", "--price", "187.21", "--size", "5",
         "--trade-id", "9"],
        ["publish", "bar", *url, "--symbol", "AAPL", "--open", "1", "--high", "3", "--low",
         "0.5", "--close", "2", "--volume", "100", "--trade-count", "4", "--vwap", "1.5"],
        ["publish", "fill", *url, "--symbol", "MSFT", "--event", "partial_fill", "--side",
         "sell", "--qty", "4", "--price", "10.5", "--order-id",
         "6F0C8E0E-1A2B-4C3D-8E9F-000000000001", "--position-qty", "-2"],
        ["publish", "quote", *url, "--symbol", "AAPL", "--bid", "1", "--ask", "2"],
        ["drop", *url, "--kind", "trade_updates"],
    ]
    for command in commands:
        assert main(["simulator", *command]) == 0
    trade, bar, update = received.wait(3)

    assert capsys.readouterr().out.splitlines() == [
        "trade AAPL sent to 1 connection", "bar AAPL sent to 1 connection",
        "partial_fill MSFT sent to 1 connection", "quote AAPL sent to 0 connections",
        "dropped 1 connection (trade_updates)"]
    assert (trade["p"], trade["s"], trade["i"]) == (187.21, 5, 9)
    assert (bar["o"], bar["h"], bar["l"], bar["c"], bar["v"], bar["n"], bar["vw"]) == (
        1, 3, 0.5, 2, 100, 4, 1.5)
    order = update["data"]["order"]
    assert (order["id"], order["side"]) == ("6f0c8e0e-1a2b-4c3d-8e9f-000000000001", "sell")
    assert update["data"]["position_qty"] == "-2"

    assert main(["simulator", "stats", *url]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["kinds"][TRADE_UPDATES]["drops"] == 1
    assert stats["kinds"][MARKET_DATA]["data_messages"] == 2


@pytest.mark.parametrize(("args", "reason"), [
    (["stats", "--url", "ftp://127.0.0.1:1"], "expected the simulator's address as "
                                              "http://HOST:PORT, got 'ftp://127.0.0.1:1'"),
    (["stats", "--url", "http://127.0.0.1"], "http://HOST:PORT"),
    (["stats", "--url", "http://127.0.0.1:x"], "http://HOST:PORT"),
    (["stats", "--url", "http://127.0.0.1:1/control"], "http://HOST:PORT"),
    (["stats", "--url", "http://127.0.0.1:1/?a=1"], "http://HOST:PORT"),
    (["publish", "quote", "--url", "http://h:1", "--symbol", "A", "--bid", "0", "--ask", "1"],
     "argument --bid: expected a positive number, got '0'"),
    (["publish", "quote", "--url", "http://h:1", "--symbol", "A", "--bid", "1", "--ask", "x"],
     "argument --ask: expected a number, got 'x'"),
    (["publish", "trade", "--url", "http://h:1", "--symbol", "A", "--price", "nan"],
     "argument --price: expected a positive number, got 'nan'"),
    (["publish", "fill", "--url", "http://h:1", "--symbol", "A", "--position-qty", "inf"],
     "argument --position-qty: expected a finite number, got 'inf'"),
    (["publish", "fill", "--url", "http://h:1", "--symbol", "A", "--order-id", "42"],
     "argument --order-id: expected a UUID, got '42'"),
    (["publish", "fill", "--url", "http://h:1", "--symbol", "A", "--event", "teleport"],
     "argument --event: invalid choice: 'teleport'"),
    (["publish", "bar", "--url", "http://h:1", "--symbol", "A", "--open", "1", "--high", "1",
      "--low", "1", "--close", "1", "--volume", "-1"], "argument --volume: must be in 0..1e+09"),
    (["publish", "mood", "--url", "http://h:1"], "argument MESSAGE: invalid choice: 'mood'"),
    (["drop", "--url", "http://h:1", "--kind", "all"], "argument --kind: invalid choice"),
    (["--port", "0", "--seed", "3", "stats", "--url", "http://h:1"],
     "serving options (--port, --seed) do not apply to 'stats', which controls the simulator "
     "at --url"),
    ([], "the following arguments are required: --port"),
])
def test_bad_arguments_exit_2_with_one_line(
    args: list[str], reason: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["simulator", *args])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and reason in errors[0], errors


def test_refusals_and_unreachable_simulators_exit_1(
    sim: Simulator, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["simulator", "publish", "bar", "--url", sim.control_url, "--symbol", "AAPL",
                 "--open", "2", "--high", "3", "--low", "2.5", "--close", "2",
                 "--volume", "1"]) == 1
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert main(["simulator", "drop", "--url", closed]) == 1

    assert capsys.readouterr().err.splitlines() == [
        "streamwarden: InvalidInputError: the simulator refused bar: a bar needs low <= open, "
        "close <= high (operation=simulator.control.bar)",
        f"streamwarden: SimulatorError: cannot reach the simulator at {closed}: Connection "
        f"refused (operation=simulator.control.drop)"]
    assert sim.stats().kind(MARKET_DATA).data_messages == 0


class _Answer(BaseHTTPRequestHandler):
    """Another HTTP server at the given URL: it answers every GET with a fixed status and
    body, or closes the connection without answering."""

    status, body = 200, b""

    def do_GET(self) -> None:
        if self.status == 0:
            self.close_connection = True
            return
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def other_server(status: int, body: bytes) -> Iterator[str]:
    handler = type("Handler", (_Answer,), {"status": status, "body": body})
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,),
                                  name="test-other-server", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(BOUND)


@pytest.mark.parametrize(("status", "body", "message"), [
    (404, b"<html>\nNot here\n</html>", "the simulator refused stats: <html> (HTTP 404)"),
    (500, b"", "the simulator refused stats: Internal Server Error (HTTP 500)"),
    (200, b"hello", "unexpected answer from {url}: b'hello'"),
    (200, b"[1, 2]", "unexpected answer from {url}: b'[1, 2]'"),
    (0, b"", "cannot reach the simulator at {url}: Remote end closed connection without "
             "response"),
])
def test_answers_that_are_not_the_simulators_exit_1(
    status: int, body: bytes, message: str, capsys: pytest.CaptureFixture[str],
) -> None:
    with other_server(status, body) as url:
        assert main(["simulator", "stats", "--url", url]) == 1
    assert capsys.readouterr().err == (f"streamwarden: SimulatorError: {message.format(url=url)} "
                                       f"(operation=simulator.control.stats)\n")


@pytest.mark.parametrize("action", ["drop", "mute"])
def test_an_answer_without_a_count_exits_1(action: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with other_server(200, b'{"ok": true}') as url:
        assert main(["simulator", action, "--url", url]) == 1
    assert capsys.readouterr().err == (
        f"streamwarden: SimulatorError: unexpected answer from {url}: {{'ok': True}} "
        f"(operation=simulator.control.{action})\n")


def test_a_silent_server_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(SimulatorError, match=f"cannot reach the simulator at {url}: "
                                                 f"timed out"):
            request(url, "stats", {}, timeout=0.2)


LIGHT = """
import sys
from streamwarden.cli import main
status = main(sys.argv[1:])
heavy = sorted({"websockets", "structlog", "alpaca", "sqlalchemy"} & set(sys.modules))
print(status, heavy)
"""


def test_control_commands_do_not_load_the_server() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    done = subprocess.run([sys.executable, "-c", LIGHT, "simulator", "stats", "--url", closed],
                          capture_output=True, text=True, timeout=STARTUP, env=ENV, check=False)
    assert done.stdout == "1 []\n", done.stderr


def test_the_package_loads_the_simulator_on_first_use() -> None:
    import streamwarden.simulator as package  # noqa: PLC0415

    assert package.Simulator is Simulator and "Simulator" in dir(package)
    with pytest.raises(AttributeError, match="has no attribute 'Simulatr'"):
        _ = package.Simulatr  # type: ignore[attr-defined]


def test_python_dash_m_runs_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The tests above run ``python -m streamwarden`` in new processes; this runs it here too,
    # where coverage is measured.
    monkeypatch.setattr(sys, "argv", ["streamwarden", "--version"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("streamwarden", run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"streamwarden {__version__}\n"


def _readme_section() -> str:
    return README.read_text().split("## Testing your own consumer", 1)[1].split("\n## ")[0]


def test_the_readme_commands_parse() -> None:
    commands = [line.split()[1:] for line in _readme_section().splitlines()
                if line.startswith("streamwarden simulator")]
    assert len(commands) == 11
    for argv in commands:
        args = _parser(argv).parse_args(argv)
        assert args.command == "simulator" and callable(args.handler)


def test_the_readme_curl_request_publishes_a_fill(sim: Simulator, sdk: SdkRunner) -> None:
    (header,) = re.findall(r"curl -H '([^']+)'", _readme_section())
    (url,) = re.findall(r"'(http://127\.0\.0\.1:8765/control/[^']+)'", _readme_section())
    name, value = header.split(": ")
    stream, received = sdk.trading(), Received()
    stream.subscribe_trade_updates(received.handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")

    target = url.replace("http://127.0.0.1:8765", sim.control_url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(urllib.request.Request(target, headers={name: value}),
                     timeout=BOUND) as response:
        assert json.loads(response.read()) == {"sent_to": 1}
    (update,) = received.wait(1)
    assert (update.event, update.order.client_order_id) == (TradeEvent.FILL, "momentum-1")


def test_mute_and_unmute_switch_the_fault(sim: Simulator,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--url", sim.control_url]
    assert main(["simulator", "mute", *url]) == 0
    assert sim.faults.mute
    assert request(sim.control_url, "mute", {}) == {"muted": True}
    assert main(["simulator", "unmute", *url]) == 0
    assert not sim.faults.mute
    assert capsys.readouterr().out.splitlines() == ["muted", "unmuted"]
