"""``streamwarden simulator``: arguments, output, duration, signals."""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading

import pytest
from websockets.sync.client import connect

from streamwarden.simulator import Faults, SimulatorError
from streamwarden.simulator.command import add_commands
from tests.simulator.conftest import BOUND, simulator_threads


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamwarden")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_arguments_build_the_faults() -> None:
    args = _parse(["simulator", "--port", "0", "--fault", "auth_failure", "--fault",
                   "drop_once=3", "--fault", "slow_start=0.5", "--quote-rate", "10",
                   "--seed", "4", "--trading-frames", "binary"])
    assert args.faults == Faults(auth_failure=True, drop_after=3, drop_once=True,
                                 slow_start=0.5)
    assert (args.port, args.host, args.quote_rate, args.seed) == (0, "127.0.0.1", 10.0, 4)
    assert callable(args.handler)


@pytest.mark.parametrize(("argv", "reason"), [
    (["--fault", "teleport"], "--fault: unknown fault 'teleport'"),
    (["--fault", "drop_after=0"], "--fault: drop_after must be at least 1"),
    (["--fault", "hang_on_close", "--fault", "hang_on_close"], "given twice"),
    (["--port", "70000"], "must be in 0..65535"),
    (["--port", "x"], "expected a number"),
    (["--quote-rate", "-1"], "must be in 0.."),
    (["--reaper-window", "-1"], "--reaper-window: must be in 0.."),
    (["--connect-rate-limit", "0"], "--connect-rate-limit: must be at least 1"),
])
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse(["simulator", "--port", "0", *argv])
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and reason in errors[0]


def test_runs_for_the_duration_and_prints_how_to_connect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parse(["simulator", "--port", "0", "--duration", "0.3", "--fault", "hang_on_close"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    port = re.search(r"listening on 127\.0\.0\.1:(\d+)", out)
    assert port is not None
    assert f"export STREAMWARDEN_MARKET_DATA_URL=ws://127.0.0.1:{port[1]}/v2/iex" in out
    assert f"export STREAMWARDEN_TRADE_UPDATES_URL=ws://127.0.0.1:{port[1]}/stream" in out
    assert f"  control        http://127.0.0.1:{port[1]}/control/<action>   (HTTP, from " \
           f"loopback only)\n" in out
    assert f"  streamwarden simulator publish quote --url http://127.0.0.1:{port[1]} " \
           f"--symbol AAPL --bid 187.20 --ask 187.22\n" in out
    assert f"  streamwarden simulator publish fill --url http://127.0.0.1:{port[1]} " \
           f"--symbol AAPL --qty 1 --price 187.21 --client-order-id my-order-1\n" in out
    assert "faults: hang_on_close; quote rate 1/s" in out
    assert f"export STREAMWARDEN_CRYPTO_DATA_URL=ws://127.0.0.1:{port[1]}/v1beta3/crypto/us" \
        in out
    assert f"export STREAMWARDEN_OPTION_DATA_URL=ws://127.0.0.1:{port[1]}/v1beta1/indicative" \
        in out
    assert f"export STREAMWARDEN_NEWS_URL=ws://127.0.0.1:{port[1]}/v1beta1/news" in out
    assert ("stopped (connections opened: market_data 0, trade_updates 0, crypto_data 0, "
            "option_data 0, news 0)") in out
    assert simulator_threads() == []


@pytest.mark.parametrize(("argv", "rate"), [([], 1.0), (["--quote-rate", "0"], 0.0),
                                             (["--quote-rate", "2.5"], 2.5)])
def test_quote_rate_defaults_to_one_per_second_and_zero_turns_it_off(
    argv: list[str], rate: float, capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parse(["simulator", "--port", "0", "--duration", "0", *argv])
    assert args.quote_rate == rate
    assert args.handler(args) == 0
    assert f"; quote rate {rate:g}/s;" in capsys.readouterr().out


def test_runs_in_a_worker_thread_without_touching_signals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parse(["simulator", "--port", "0", "--duration", "0"])
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(args.handler(args)),
                              name="test-command-worker")
    worker.start()
    worker.join(BOUND)
    assert result == [0]
    assert "stopped" in capsys.readouterr().out


def test_busy_port_raises_for_the_cli_to_report() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        args = _parse(["simulator", "--port", str(busy.getsockname()[1]), "--duration", "0"])
        with pytest.raises(SimulatorError, match="cannot listen"):
            args.handler(args)


SCRIPT = """
import argparse, sys
from streamwarden.simulator.command import add_commands
parser = argparse.ArgumentParser(prog="streamwarden")
add_commands(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_it_cleanly(signum: int) -> None:
    # Without pytest-cov's subprocess measurement: it would mix the whole package into the
    # simulator's coverage report.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("COV_CORE", "COVERAGE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "simulator", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        port = re.search(r":(\d+) ", first)
        assert port is not None, first
        with connect(f"ws://127.0.0.1:{port[1]}/stream", open_timeout=BOUND):
            pass
        process.send_signal(signum)
        out, err = process.communicate(timeout=BOUND)
    finally:
        process.kill()
        process.wait(BOUND)
    assert process.returncode == 0, err
    assert ("stopped (connections opened: market_data 0, trade_updates 1, crypto_data 0, "
            "option_data 0, news 0)") in out


def test_the_connection_rules_reach_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["simulator", "--port", "0", "--duration", "0", "--reaper-window", "0.5",
                   "--connect-rate-limit", "3"])
    assert (args.reaper_window, args.connect_rate_limit) == (0.5, 3)
    assert args.handler(args) == 0
    assert "reaper window 0.5 s; upgrades per endpoint and second: 3)" in capsys.readouterr().out
    defaults = _parse(["simulator", "--port", "0", "--duration", "0"])
    assert (defaults.reaper_window, defaults.connect_rate_limit) == (90.0, None)
    assert defaults.handler(defaults) == 0
    assert "reaper window 90 s; upgrades per endpoint and second: no cap)" in \
        capsys.readouterr().out
