"""A manager's transports under a fleet, with the in-memory transport (events produced by the
test) and the real PostgreSQL: what the wrapped transport reports reaches the lifecycle, a fatal
error releases the key, a transport that will not stop on a change of ownership is cancelled."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
import ulid

import streamwarden as sw
from streamwarden.errors import AuthenticationError
from streamwarden.fleet import TABLE, Fleet, FleetTiming, stream_key_text
from streamwarden.marketdata import Quote
from streamwarden.testing import InMemoryTransportFactory, TransportOptions
from streamwarden.transports import MalformedMessage, StreamMessage
from tests.waiting import wait_until

TIMING = FleetTiming(heartbeat_interval=0.5, heartbeat_timeout=0.5, step_down_grace=0.5,
                     takeover_wait=1.5)
SETTINGS = sw.Settings(start_timeout=5.0, stop_timeout=0.5, drain_grace=0.0, debug=True)


def _creds() -> sw.Credentials:
    return sw.Credentials(f"PKFLEETMEM{str(ulid.ULID())[-10:]}", "fleet-memory-secret-x")


def _row(url: str, key: sw.StreamKey) -> tuple[int, bool] | None:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        return conn.execute(f"SELECT epoch, heartbeat_at < now() - interval '1 hour' FROM {TABLE}"
                            " WHERE stream_key = %s", (stream_key_text(key),)).fetchone()


def test_events_of_the_owners_transport_reach_the_lifecycle(postgresql_url):
    factory = InMemoryTransportFactory()
    fleet = Fleet(postgresql_url, member="memory", timing=TIMING)
    with sw.ConnectionManager(transport_factory=factory, settings=SETTINGS,
                              fleet=fleet) as manager:
        lease = manager.market_data(_creds(), symbols=["AAPL"])
        transport = factory.latest()
        quote = Quote("AAPL", Decimal("1.5"), Decimal(1), Decimal("1.6"), Decimal(1),
                      datetime.now(UTC))
        transport.emit_message(StreamMessage("quotes", "AAPL", quote))
        assert lease.wait_for_quote("AAPL", timeout=5) == quote
        transport.emit_malformed(MalformedMessage("quotes", "AAPL", "bp", "not a number"))
        assert wait_until(lambda: manager.health().lifecycles[0].malformed_messages == 1)
        transport.emit_connection_lost("peer closed")
        assert wait_until(lambda: manager.health().lifecycles[0].state == "starting")
        transport.emit_connected()
        assert wait_until(lambda: manager.health().lifecycles[0].state == "running")
        assert lease.is_live
        key = sw.StreamKey(lease_fingerprint(manager), "market_data", True, SETTINGS.feed)
    assert _row(postgresql_url, key) == (1, True)  # released on close


def lease_fingerprint(manager: sw.ConnectionManager) -> str:
    return manager.health().lifecycles[0].fingerprint


def test_a_fatal_error_fails_the_acquire_and_releases_the_key(postgresql_url):
    factory = InMemoryTransportFactory(TransportOptions(
        fatal_error=AuthenticationError("refused by the peer")))
    fleet = Fleet(postgresql_url, member="refused", timing=TIMING)
    creds = _creds()
    with sw.ConnectionManager(transport_factory=factory, settings=SETTINGS,
                              fleet=fleet) as manager:
        with pytest.raises(AuthenticationError):
            manager.market_data(creds, symbols=["AAPL"])
        fingerprint = creds.fingerprint(SETTINGS.fingerprint_key_bytes)
        key = sw.StreamKey(fingerprint, "market_data", True, SETTINGS.feed)
        assert wait_until(lambda: _row(postgresql_url, key) == (1, True))


@pytest.mark.timeout(60)
def test_a_transport_that_will_not_stop_on_a_step_down_is_cancelled(postgresql_url):
    factory = InMemoryTransportFactory(TransportOptions(hang_on_stop=True))
    fleet = Fleet(postgresql_url, member="stubborn", timing=TIMING)
    creds = _creds()
    manager = sw.ConnectionManager(transport_factory=factory, settings=SETTINGS, fleet=fleet)
    try:
        lease = manager.market_data(creds, symbols=["AAPL"])
        key = sw.StreamKey(creds.fingerprint(SETTINGS.fingerprint_key_bytes), "market_data",
                           True, SETTINGS.feed)
        with psycopg.connect(postgresql_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"UPDATE {TABLE} SET epoch = 7 WHERE stream_key = %s",
                         (stream_key_text(key),))  # fenced: the owner steps down
        assert wait_until(lambda: len(factory.created) == 2, timeout=15)  # owner again, epoch 8
        assert fleet.epoch(key) == 8
        assert wait_until(lambda: manager.health().lifecycles[0].state == "running", timeout=5)
        assert lease.is_live
    finally:
        with contextlib.suppress(sw.StopTimeoutError):  # the new one hangs on stop too
            manager.close()
