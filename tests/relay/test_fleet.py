"""Two relays in one fleet (real processes, the real PostgreSQL, the simulator as Alpaca).

Whichever relay a client uses, the account has one upstream socket: the fleet's owner holds
it, and the other relay connects to the owner's advertised address as its upstream. When the
owner is killed (SIGKILL: no goodbye), the survivor takes over within 10 s and its client's
quotes resume; the simulator never sees two sockets of the account at once.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import psycopg
import ulid

from streamwarden.simulator import MARKET_DATA, Simulator
from tests.relay.conftest import BOUND, UPSTREAM_SECRET, Client, Relay

TAKEOVER_BOUND = 10.0
"""The issue's bound on a takeover, from the owner's death to the survivor's upstream."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Watch:
    """The most market-data sockets of ``key`` the simulator had open at once, sampled."""

    def __init__(self, sim: Simulator, key: str) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sim, key), daemon=True)
        self._thread.start()

    def _run(self, sim: Simulator, key: str) -> None:
        while not self._stop.wait(0.002):
            open_now = sum(1 for c in sim.stats().open_connections(MARKET_DATA)
                           if c.key_id == key)
            self.most = max(self.most, open_now)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


def _owner_url(fleet_url: str) -> str:
    with psycopg.connect(fleet_url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT advertised_url FROM streamwarden_fleet_owner "
                           "WHERE heartbeat_at > now() - interval '10 seconds'").fetchone()
    assert row is not None, "no live owner row"
    return str(row[0])


def _quote_reaches(sim: Simulator, client: Client, symbol: str, bid: float,
                   timeout: float) -> float:
    """Publish ``bid`` until ``client`` has it; the seconds that took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        sim.publish_quote(symbol, bid_price=bid, ask_price=bid + 0.01)
        if bid in client.quotes(symbol):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{bid} did not reach the client within {timeout} s")


def test_two_relays_share_one_upstream_and_the_survivor_takes_over(postgresql_url: str,
                                                                    tmp_path: Path) -> None:
    key = f"PKRELAYFLEET{str(ulid.ULID())[-8:]}"  # advisory locks are database-wide
    with Simulator(reaper_window=0) as sim:
        relays: dict[str, Relay] = {}
        for name in ("a", "b"):
            port = _free_port()
            url = f"ws://127.0.0.1:{port}"
            relays[url] = Relay(sim, tmp_path / name, "--listen", f"127.0.0.1:{port}",
                                "--fleet", postgresql_url, "--advertise", url,
                                upstream_key=key)
        clients: dict[str, Client] = {}
        watch = Watch(sim, key)
        try:
            for url, relay in relays.items():
                clients[url] = Client("stocks", f"{url}/v2/iex", key, UPSTREAM_SECRET,
                                      ["AAPL"], env=relay.env)
                clients[url].wait_log("subscribed")
            for bid in (1.0, 2.0):
                for client in clients.values():
                    _quote_reaches(sim, client, "AAPL", bid, BOUND)
            owner = _owner_url(postgresql_url)
            (survivor,) = [url for url in relays if url != owner]
            relays[owner].process.send_signal(signal.SIGKILL)
            relays[owner].process.wait(BOUND)
            took = _quote_reaches(sim, clients[survivor], "AAPL", 3.0, TAKEOVER_BOUND + 5.0)
            assert took < TAKEOVER_BOUND, took
            assert _owner_url(postgresql_url) == survivor
            assert watch.stop() == 1  # never two upstream sockets of the account at once
        finally:
            watch.stop()
            for client in clients.values():
                client.stop()
            for relay in relays.values():
                if relay.process.poll() is None:
                    relay.process.kill()
                    relay.process.wait(BOUND)
