"""Managers sharing one fleet database (the real PostgreSQL) against the simulator.

The owner's advertised URL is served here by a second simulator, a stand-in for the owner's
relay (the relay itself is built separately): what matters is that a follower connects there
and never to the account's upstream, and that the account's upstream (the first simulator)
never sees two sockets of the account at once, through a takeover.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import ulid

import streamwarden as sw
from streamwarden._keys import StreamKey
from streamwarden.errors import FleetError
from streamwarden.fleet import Fleet, FleetTiming
from streamwarden.simulator import Simulator
from tests.audit.tcp_proxy import TcpProxy
from tests.runtime.conftest import BOUND, open_market_data, sim_settings
from tests.waiting import wait_until

TIMING = FleetTiming(heartbeat_interval=0.5, heartbeat_timeout=0.5, step_down_grace=0.5,
                     takeover_wait=1.5)


def _account() -> sw.Credentials:
    # Unique per test: advisory locks are database-wide, and other runs share the server.
    return sw.Credentials(f"PKFLEET{str(ulid.ULID())[-13:]}", "fleet-secret-0001-x")


class Watch:
    """Samples how many market-data sockets of an account ``sim`` has open, until stopped."""

    def __init__(self, sim: Simulator, credentials: sw.Credentials) -> None:
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sim, credentials), daemon=True)
        self._thread.start()

    def _run(self, sim: Simulator, credentials: sw.Credentials) -> None:
        while not self._stop.wait(0.002):
            self.most = max(self.most, open_market_data(sim.stats(), credentials))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.most


@pytest.fixture
def sims() -> Iterator[tuple[Simulator, Simulator]]:
    with Simulator(reaper_window=0) as upstream, Simulator(reaper_window=0) as stand_in:
        yield upstream, stand_in


def _quote_reaches(sim: Simulator, lease: sw.MarketDataLease, price: str) -> bool:
    def arrived() -> bool:
        sim.publish_quote("AAPL", bid_price=price, ask_price="999.00")
        return float(lease.wait_for_quote("AAPL", timeout=BOUND).bid_price) == float(price)
    return wait_until(arrived, timeout=BOUND)


@pytest.mark.timeout(60)
def test_a_takeover_never_opens_two_upstream_sockets_and_the_epoch_is_audited(
        postgresql_url: str, sims: tuple[Simulator, Simulator], tmp_path: Path) -> None:
    upstream, stand_in = sims
    creds = _account()
    settings = sim_settings(upstream, reconnect_backoff_initial=0.05)
    parsed = sa.make_url(postgresql_url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    cut_url = postgresql_url.replace(f"{parsed.host}:{parsed.port or 5432}",
                                     f"127.0.0.1:{proxy.port}", 1)
    audit_a = sw.AuditLog.open(f"sqlite:///{tmp_path / 'a.db'}", settings=settings)
    audit_b = sw.AuditLog.open(f"sqlite:///{tmp_path / 'b.db'}", settings=settings)
    watch = Watch(upstream, creds)
    fleet_a = Fleet(cut_url, advertise=f"ws://127.0.0.1:{stand_in.port}", member="a",
                    timing=TIMING)
    fleet_b = Fleet(postgresql_url, advertise="ws://127.0.0.1:1", member="b", timing=TIMING)
    try:
        with sw.ConnectionManager(settings=settings, audit=audit_a, fleet=fleet_a) as a, \
                sw.ConnectionManager(settings=settings, audit=audit_b, fleet=fleet_b) as b:
            lease_a = a.market_data(creds, symbols=["AAPL"])
            lease_b = b.market_data(creds, symbols=["AAPL"])
            assert open_market_data(upstream.stats(), creds) == 1
            assert open_market_data(stand_in.stats(), creds) == 1  # the follower's upstream
            assert _quote_reaches(upstream, lease_a, "101.00")
            assert _quote_reaches(stand_in, lease_b, "102.00")

            proxy.down()  # a is cut from the fleet database: it steps down, b takes over
            assert wait_until(lambda: open_market_data(stand_in.stats(), creds) == 0
                              and open_market_data(upstream.stats(), creds) == 1, timeout=10)
            assert _quote_reaches(upstream, lease_b, "103.00")
            assert lease_a.is_live  # a's lease waits in reconnect, within reconnect_grace
        most = watch.stop()
        assert most == 1
        assert 406 not in upstream.stats().error_codes()
        records_a, records_b = audit_a.query(), audit_b.query()
        # null until the member first learns who owns the key, then the owner's epoch
        assert {r.details["fleet_epoch"] for r in records_a} == {None, 1}
        assert [r.details["fleet_epoch"] for r in records_a if r.event == "connected"] == [1]
        epochs_b = [(r.event, r.details["fleet_epoch"], r.details["fleet_role"])
                    for r in records_b]
        assert ("connected", 1, "follower") in epochs_b
        # a stepped down: b leaves a's relay (the reconnect path of the spec), then owns
        lost = epochs_b.index(("connection_lost", 1, "pending"))
        assert epochs_b.index(("connected", 2, "owner")) > lost
        assert audit_a.verify().ok and audit_b.verify().ok
    finally:
        watch.stop()
        proxy.down()
        audit_a.close()
        audit_b.close()


@pytest.mark.timeout(60)
def test_the_async_manager_owns_through_the_fleet_and_closes_it(
        postgresql_url: str, sims: tuple[Simulator, Simulator]) -> None:
    upstream, _ = sims
    creds = _account()
    sink = sw.InMemoryAuditSink()
    fleet = Fleet(postgresql_url, member="async", timing=TIMING)

    async def main() -> None:
        async with sw.AsyncConnectionManager(settings=sim_settings(upstream), audit=sink,
                                             fleet=fleet) as manager:
            lease = await manager.market_data(creds, symbols=["AAPL"])
            assert open_market_data(upstream.stats(), creds) == 1
            await lease.release()

    asyncio.run(main())
    records = sink.records()
    connected = [r for r in records if r.event == "connected"]
    assert [(r.details["fleet_epoch"], r.details["fleet_role"]) for r in connected] == [
        (1, "owner")]
    assert all("fleet_epoch" in r.details for r in records)
    with pytest.raises(FleetError):  # closed with the manager
        fleet.claim(StreamKey("any", "market_data", True, "iex"), lambda _: None)


def test_a_fleet_that_is_not_a_fleet_is_refused() -> None:
    with pytest.raises(sw.InvalidInputError, match="fleet must be"):
        sw.ConnectionManager(transport_factory=lambda *a: None,  # type: ignore[arg-type]
                             fleet="postgresql://x")  # type: ignore[arg-type]
