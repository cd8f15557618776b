"""Fixtures for the relay tests: a simulator, a relay process in front of it, and alpaca-py
clients in their own processes.

The relay runs as ``python -m streamwarden relay`` (a real process) with the upstream account
``UPSTREAM_KEY``/``UPSTREAM_SECRET`` and the simulator's URLs; clients are
:mod:`tests.relay.sdk_client` processes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamwarden.relay._auth import token_digest
from streamwarden.simulator import Simulator
from tests.waiting import wait_until

UPSTREAM_KEY = "PKRELAYUPSTREAM00001"
UPSTREAM_SECRET = "sk-RELAY-UPSTREAM-CANARY-0123456789"
CLIENT = "strategy-b"
CLIENT_TOKEN = "tok-RELAY-CLIENT-CANARY-9876543210"
BOUND = 20.0
"""Generous bound for behaviour that normally takes milliseconds (two CPUs, shared)."""
ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 1.0


class Lines:
    """A process's standard output, line by line, collected by a thread; waits wake on each."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait(self, predicate: Callable[[str], bool], timeout: float = BOUND) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines if predicate(line)), None), timeout)
        if found is None:
            raise AssertionError(f"no matching line within {timeout} s in {self.lines[-5:]}")
        return found

    def items(self) -> list[dict[str, Any]]:
        with self._changed:
            return [json.loads(line) for line in self.lines if line.startswith("{")]


class Client:
    """An alpaca-py client process (see :mod:`tests.relay.sdk_client`)."""

    def __init__(self, kind: str, url: str, key: str, secret: str, symbols: list[str], *,
                 env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.relay.sdk_client", kind, url, key, secret, *symbols],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        self.output = Lines(self.process.stdout)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def quotes(self, symbol: str | None = None) -> list[float]:
        return [item["bp"] for item in self.output.items()
                if "bp" in item and (symbol is None or item["S"] == symbol)]

    def wait_quote(self, symbol: str, bid: float, timeout: float = BOUND) -> None:
        self.output.wait(lambda line: f'"S": "{symbol}", "bp": {bid}' in line, timeout)

    def wait_log(self, text: str, timeout: float = BOUND) -> None:
        self.output.wait(lambda line: '"log"' in line and text in line, timeout)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(BOUND)


class Relay:
    """A ``streamwarden relay`` process."""

    def __init__(self, sim: Simulator, tmp_path: Path, *extra: str,
                 upstream_key: str = UPSTREAM_KEY) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        clients = tmp_path / "clients.txt"
        clients.write_text(f"# test clients\n{CLIENT}:{token_digest(CLIENT_TOKEN)}\n")
        self.db = tmp_path / "relay-audit.db"
        self.stderr_path = tmp_path / "relay.stderr"
        self.env = base_env(sim)
        self.env.update(APCA_API_KEY_ID=upstream_key, APCA_API_SECRET_KEY=UPSTREAM_SECRET)
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streamwarden", "relay", "--listen", "127.0.0.1:0",
                 "--db", f"sqlite:///{self.db}", "--clients", str(clients), *extra],
                cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.output = Lines(self.process.stdout)
        banner = self.output.wait(lambda line: "listening on" in line)
        self.url = banner.split()[-1]

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stderr_wait(self, text: str, timeout: float = BOUND) -> None:
        """Until the relay's standard error holds ``text``."""
        if not wait_until(lambda: text in self.stderr, timeout):
            raise AssertionError(f"{text!r} not in the relay's stderr within {timeout} s")

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; the exit status and the seconds it took."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(BOUND)
        return status, time.monotonic() - started


def audit_rows(relay: Relay) -> list[dict[str, Any]]:
    """The relay's audit trail, oldest first."""
    with sqlite3.connect(relay.db) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM lifecycle_audit ORDER BY seq")]


def base_env(sim: Simulator) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("STREAMWARDEN_", "APCA_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        STREAMWARDEN_MARKET_DATA_URL=sim.market_data_url,
        STREAMWARDEN_TRADE_UPDATES_URL=sim.trade_updates_url,
        STREAMWARDEN_CRYPTO_DATA_URL=sim.crypto_data_url,
        STREAMWARDEN_OPTION_DATA_URL=sim.option_data_url(),
        STREAMWARDEN_NEWS_URL=sim.news_url,
        STREAMWARDEN_TRADING_API_URL=sim.trading_api_url,
        STREAMWARDEN_STOP_TIMEOUT=str(STOP_TIMEOUT),
        STREAMWARDEN_START_TIMEOUT="10",
    )
    return env


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(reaper_window=0) as simulator:
        yield simulator


@pytest.fixture
def relay(sim: Simulator, tmp_path: Path) -> Iterator[Relay]:
    server = Relay(sim, tmp_path, "--auth-timeout", "2")
    yield server
    if server.process.poll() is None:
        status, _ = server.terminate()
        assert status == 0, server.stderr


@pytest.fixture
def clients(relay: Relay) -> Iterator[Callable[..., Client]]:
    started: list[Client] = []

    def start(kind: str, path: str, *symbols: str, key: str = UPSTREAM_KEY,
              secret: str = UPSTREAM_SECRET) -> Client:
        client = Client(kind, relay.url + path, key, secret, list(symbols), env=relay.env)
        started.append(client)
        return client

    yield start
    for client in started:
        client.stop()
