"""A client that cannot keep up is cut off with 407 while a fast one keeps up; SIGTERM drains
and closes within the stop bound, exit status 0."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from streamwarden.simulator import Simulator
from tests.relay.conftest import (
    BOUND,
    STOP_TIMEOUT,
    UPSTREAM_KEY,
    UPSTREAM_SECRET,
    Client,
    Relay,
    audit_rows,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

QUEUE = 1000
CHUNK = 200
PACE = 0.02
"""Quotes go out CHUNK at a time every PACE seconds (10,000/s): a pace alpaca-py keeps up with,
while the client that reads nothing falls further behind until it is cut off."""


def test_slow_client_is_cut_with_407_while_a_fast_one_keeps_up(sim: Simulator,
                                                                 tmp_path: Path) -> None:
    relay = Relay(sim, tmp_path, "--queue-size", str(QUEUE))
    fast = Client("stocks", relay.url + "/v2/iex", UPSTREAM_KEY, UPSTREAM_SECRET, ["AAPL"],
                  env=relay.env)
    # The slow client reads nothing once subscribed, through a small receive buffer.
    sock = socket.create_connection(("127.0.0.1", int(relay.url.rsplit(":", 1)[1])))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        with connect(relay.url + "/v2/iex", sock=sock, max_queue=1, close_timeout=0.5,
                     open_timeout=BOUND) as slow:
            slow.recv(BOUND)
            slow.send(json.dumps({"action": "auth", "key": UPSTREAM_KEY,
                                  "secret": UPSTREAM_SECRET}))
            slow.recv(BOUND)
            slow.send(json.dumps({"action": "subscribe", "quotes": ["AAPL"]}))
            assert json.loads(slow.recv(BOUND))[0]["T"] == "subscription"
            fast.wait_log("subscribed")
            sim.wait_for(lambda s: "AAPL" in s.wire_subscription("quotes"), BOUND)
            sent = 0
            deadline = time.monotonic() + BOUND
            while "relay.client_cut" not in relay.stderr and time.monotonic() < deadline:
                sent += sim.publish_quotes("AAPL", CHUNK, batch_size=CHUNK, timeout=BOUND)
                time.sleep(PACE)
            assert "relay.client_cut" in relay.stderr
            assert relay.stderr.count("relay.client_cut") == 1  # the slow one only
            published = time.monotonic()
            sim.publish_quote("AAPL", bid_price=9999, ask_price=10000)
            fast.wait_quote("AAPL", 9999.0)
            assert time.monotonic() - published < 5.0  # generous: milliseconds normally
            # The relay let go of the slow client: its lease was released.
            address = "{}:{}".format(*sock.getsockname()[:2])
            assert wait_until(lambda: any(
                row["event"] == "release" and row["owner"] == address
                for row in audit_rows(relay)), BOUND)
        assert len(fast.quotes("AAPL")) == sent + 1  # every quote, none conflated
        assert fast.process.poll() is None
        assert "407" in relay.stderr
    finally:
        fast.stop()
        status, _ = relay.terminate()
        assert status == 0


def test_sigterm_drains_and_exits_within_the_bound(sim: Simulator, relay: Relay,
                                                    clients: Callable[..., Client]) -> None:
    client = clients("stocks", "/v2/iex", "AAPL")
    clients("trading", "/stream")
    sim.wait_for(lambda s: "AAPL" in s.wire_subscription("quotes"), BOUND)
    client.wait_log("subscribed")
    status, took = relay.terminate()
    assert status == 0
    assert took < STOP_TIMEOUT + 3.0  # the stop bound, plus process exit
    assert "streamwarden relay stopped" in relay.output.lines
    sim.wait_for(lambda s: s.kind("market_data").open == 0, BOUND)
    client.wait_log("1001")  # the client was told: going away


def test_metrics_and_probes_are_served_with_the_metrics_flag(sim: Simulator,
                                                              tmp_path: Path) -> None:
    relay = Relay(sim, tmp_path, "--metrics", "127.0.0.1:0")
    client = None
    try:
        base = relay.output.wait(lambda text: "metrics on" in text).split()[-1]
        assert base.startswith("http://127.0.0.1:")
        client = Client("stocks", relay.url + "/v2/iex", UPSTREAM_KEY, UPSTREAM_SECRET,
                        ["AAPL"], env=relay.env)
        client.wait_log("subscribed")
        assert urllib.request.urlopen(f"{base}/readyz", timeout=BOUND).status == 200
        assert urllib.request.urlopen(f"{base}/healthz", timeout=BOUND).status == 200
        text = urllib.request.urlopen(f"{base}/metrics", timeout=BOUND).read().decode()
        families = {family.name: family for family in text_string_to_metric_families(text)}
        (leases,) = [sample for sample in families["streamwarden_leases"].samples
                     if sample.labels.get("kind") == "market_data"]
        assert leases.value == 1  # the client's lease, counted by the relay's manager
        client.stop()
        client = None
        assert relay.terminate()[0] == 0
    finally:
        if client is not None:
            client.stop()
        if relay.process.poll() is None:
            relay.process.kill()
