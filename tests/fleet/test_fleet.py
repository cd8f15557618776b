"""Fleet in one process: bad input, an unreachable database, fencing by the row's epoch, a
stalled connection, listeners that fail. PostgreSQL tests need STREAMWARDEN_TEST_PG_URL."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import ulid

from streamwarden import Settings
from streamwarden._keys import (
    CRYPTO_DATA,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    TRADE_UPDATES,
    StreamKey,
)
from streamwarden.errors import FleetError, InvalidInputError
from streamwarden.fleet import (
    PENDING,
    TABLE,
    Fleet,
    FleetTiming,
    Ownership,
    lock_id,
    stream_key_text,
)
from streamwarden.runtime._fleet import FleetTransport, FleetTransports, follower_settings
from streamwarden.testing import InMemoryTransportFactory
from tests.fleet.conftest import StallingProxy, through
from tests.waiting import wait_until

TIMING = FleetTiming(heartbeat_interval=0.5, heartbeat_timeout=0.5, step_down_grace=0.5,
                     takeover_wait=1.5)


def _key(kind: str = MARKET_DATA, feed: str | None = "iex") -> StreamKey:
    return StreamKey(f"fleet-unit-{str(ulid.ULID()).lower()}", kind, True, feed)  # type: ignore[arg-type]


class Seen:
    """A listener that keeps every ownership it is told."""

    def __init__(self) -> None:
        self.told: list[tuple[float, Ownership]] = []
        self._lock = threading.Lock()

    def __call__(self, ownership: Ownership) -> None:
        with self._lock:
            self.told.append((time.monotonic(), ownership))

    def roles(self) -> list[tuple[str, int | None]]:
        with self._lock:
            return [(o.role, o.epoch) for _, o in self.told]

    def has(self, role: str, epoch: int | None = None) -> bool:
        return any(r == role and (epoch is None or e == epoch) for r, e in self.roles())


@pytest.fixture
def fleets(postgresql_url: str) -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.close()


def _fleet(fleets: list[Fleet], url: str, member: str, **kwargs: object) -> Fleet:
    fleet = Fleet(url, member=member, timing=TIMING, advertise=f"ws://{member}.invalid:1",
                  **kwargs).start()  # type: ignore[arg-type]
    fleets.append(fleet)
    return fleet


@pytest.mark.parametrize("url", ["mysql://x/y", 5, "postgresql+asyncpg://x/y", "postgresql"])
def test_a_url_that_is_not_postgresql_is_refused(url):
    with pytest.raises(InvalidInputError, match="postgresql://"):
        Fleet(url)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("advertise", "http://relay:80", "ws://"), ("member", " ", "member"),
])
def test_a_bad_advertise_url_or_member_is_refused(field, value, match):
    with pytest.raises(InvalidInputError, match=match):
        Fleet("postgresql://x/y", **{field: value})


@pytest.mark.parametrize("bounds", [
    {"heartbeat_interval": 0}, {"heartbeat_timeout": -1.0}, {"step_down_grace": True},
    {"takeover_wait": "3"}, {"heartbeat_interval": 1.0, "heartbeat_timeout": 2.0},
])
def test_bounds_that_are_not_positive_or_break_the_step_down_argument_are_refused(bounds):
    with pytest.raises(InvalidInputError):
        FleetTiming(**{"takeover_wait": 10.0, **bounds})


def test_an_unreachable_database_fails_the_start_with_a_fleet_error_and_no_password():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fleet = Fleet(f"postgresql://fleet:pw-CANARY-7@127.0.0.1:{port}/x", timing=TIMING)
    with pytest.raises(FleetError) as refused:
        fleet.start()
    assert "pw-CANARY-7" not in str(refused.value)
    with pytest.raises(FleetError, match="not started or is closed"):
        fleet.claim(_key(), lambda _: None)
    with pytest.raises(FleetError, match="closed"):  # a failed start closed it
        fleet.start()
    fleet.close()  # closes quietly


def test_claims_releases_and_reads(postgresql_url, fleets):
    fleet = _fleet(fleets, postgresql_url, "only")
    assert fleet.start() is fleet  # idempotent
    key, seen = _key(), Seen()
    assert fleet.ownership(key) == PENDING and fleet.epoch(key) is None
    assert fleet.claim(key, seen) == PENDING
    with pytest.raises(InvalidInputError, match="already claimed"):
        fleet.claim(key, seen)
    assert wait_until(lambda: seen.has("owner", 1), timeout=5)
    assert fleet.ownership(key) == Ownership("owner", 1, "only", "ws://only.invalid:1")
    assert fleet.epoch(key) == 1
    fleet.release(key)
    fleet.release(key)  # no longer claimed: a no-op
    assert fleet.ownership(key) == PENDING
    with psycopg.connect(postgresql_url.replace("+psycopg", "")) as conn:
        row = conn.execute(f"SELECT epoch, heartbeat_at < now() - interval '1 hour' FROM {TABLE}"
                           f" WHERE stream_key = %s", (stream_key_text(key),)).fetchone()
    assert row == (1, True)  # marked released: the next owner need not wait


def test_an_owner_whose_row_was_fenced_steps_down_and_takes_over_with_a_higher_epoch(
        postgresql_url, fleets):
    fleet = _fleet(fleets, postgresql_url, "fenced")
    key, seen = _key(), Seen()
    fleet.claim(key, seen)
    assert wait_until(lambda: seen.has("owner", 1), timeout=5)
    with psycopg.connect(postgresql_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"UPDATE {TABLE} SET epoch = 41 WHERE stream_key = %s",
                     (stream_key_text(key),))
    assert wait_until(lambda: seen.has("owner", 42), timeout=10)
    roles = seen.roles()
    assert roles[:2] == [("owner", 1), ("pending", 1)]  # stepped down at once
    assert roles[-1] == ("owner", 42)  # the next epoch above the row's, once it was free


def test_a_listener_that_raises_is_logged_and_the_fleet_goes_on(postgresql_url, fleets, caplog):
    fleet = _fleet(fleets, postgresql_url, "careless")
    seen = Seen()

    def broken(_: Ownership) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="streamwarden.fleet"):
        fleet.claim(_key(), broken)
        other = _key()
        fleet.claim(other, seen)
        assert wait_until(lambda: seen.has("owner", 1), timeout=5)
    assert "fleet listener failed" in caplog.text


@pytest.mark.timeout(60)
def test_an_owner_whose_connection_stalls_steps_down_and_nobody_takes_over_while_it_might_run(
        postgresql_url, fleets):
    """A silent network (no FIN, no RST): the owner's heartbeat overruns, it steps down; the
    server still sees the session, so its lock stays held and nobody may take over until the
    session is gone."""
    import sqlalchemy as sa  # noqa: PLC0415

    parsed = sa.make_url(postgresql_url)
    proxy = StallingProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    try:
        stalled = _fleet(fleets, through(postgresql_url, proxy.port), "stalled")
        other = _fleet(fleets, postgresql_url, "other")
        key, seen_stalled, seen_other = _key(), Seen(), Seen()
        stalled.claim(key, seen_stalled)
        assert wait_until(lambda: seen_stalled.has("owner", 1), timeout=5)
        other.claim(key, seen_other)
        assert wait_until(lambda: seen_other.has("follower", 1), timeout=5)

        proxy.stall()
        stalled_at = time.monotonic()
        assert wait_until(lambda: seen_stalled.has("pending"), timeout=5)
        stepped_down = next(t for t, o in seen_stalled.told if o.role == "pending")
        bound = TIMING.heartbeat_interval + TIMING.heartbeat_timeout
        assert stepped_down - stalled_at <= bound + 1.0  # generous: a loaded machine
        time.sleep(TIMING.takeover_wait + 1.0)
        assert not seen_other.has("owner")  # the stuck session still holds the lock
        proxy.close()  # the session ends: the server releases its lock
        assert wait_until(lambda: seen_other.has("owner", 2), timeout=10)
    finally:
        proxy.close()


@pytest.mark.parametrize(("kind", "feed", "field", "url"), [
    (MARKET_DATA, "sip", "market_data_url", "ws://relay:9/v2/sip"),
    (CRYPTO_DATA, "us", "crypto_data_url", "ws://relay:9/v1beta3/crypto/us"),
    (OPTION_DATA, "opra", "option_data_url", "ws://relay:9/v1beta1/opra"),
    (NEWS, None, "news_url", "ws://relay:9/v1beta1/news"),
    (TRADE_UPDATES, None, "trade_updates_url", "ws://relay:9/stream"),
])
def test_a_follower_connects_to_the_owner_on_alpacas_own_path(kind, feed, field, url):
    settings = follower_settings(Settings(), _key(kind, feed), "ws://relay:9/")
    assert getattr(settings, field) == url
    assert dataclasses.replace(settings, **{field: None}) == Settings()  # nothing else moved


def test_a_fleet_transport_stopped_before_it_runs_claims_nothing():
    import asyncio  # noqa: PLC0415

    fleet = Fleet("postgresql://never-started/x")
    transport = FleetTransport(_key(), None, Settings(),  # type: ignore[arg-type]
                               FleetTransports(fleet, InMemoryTransportFactory()))

    async def main() -> None:
        transport.set_subscriptions(frozenset({("quotes", "AAPL")}))
        transport.reconnect("stale")  # nothing runs: a no-op
        await transport.stop()
        await transport.run(None)  # type: ignore[arg-type]  # returns at once: stopped

    asyncio.run(main())
    assert transport.subscriptions == frozenset({("quotes", "AAPL")})
    assert not transport.socket_open


def test_an_owner_whose_session_lost_its_lock_steps_down(postgresql_url, fleets):
    """What a transaction-mode pooler does (the next statement runs on a session that never
    took the lock), produced by unlocking on the fleet's own session: the heartbeat's pg_locks
    check sees the lock missing and steps down, though the connection is fine."""
    import asyncio  # noqa: PLC0415

    fleet = _fleet(fleets, postgresql_url, "pooled")
    key, seen = _key(), Seen()
    fleet.claim(key, seen)
    assert wait_until(lambda: seen.has("owner", 1), timeout=5)
    assert fleet._conn is not None and fleet._loop is not None
    asyncio.run_coroutine_threadsafe(fleet._conn.execute("SELECT pg_advisory_unlock_all()"),
                                     fleet._loop).result(5)
    assert wait_until(lambda: seen.has("pending", 1), timeout=5)


def test_followers_of_an_owner_that_advertises_nothing_wait(postgresql_url, fleets):
    silent = Fleet(postgresql_url, member="silent", timing=TIMING).start()
    fleets.append(silent)
    other = _fleet(fleets, postgresql_url, "other")
    key, seen_silent, seen_other = _key(), Seen(), Seen()
    silent.claim(key, seen_silent)
    assert wait_until(lambda: seen_silent.has("owner", 1), timeout=5)
    other.claim(key, seen_other)
    assert wait_until(lambda: other.ownership(key).owner == "silent", timeout=5)
    assert other.ownership(key) == Ownership("pending", 1, "silent", None)


def test_claims_released_right_away_leave_no_lock_behind(postgresql_url, fleets):
    """Claims released right after being made (their round may be in progress; releases wait
    for it): afterwards no lock of theirs is held."""
    fleet = _fleet(fleets, postgresql_url, "hasty")
    keys = [_key() for _ in range(20)]
    for key in keys:
        fleet.claim(key, lambda _: None)
        fleet.release(key)
    time.sleep(2 * TIMING.heartbeat_interval)  # rounds in progress end
    ids = [lock_id(stream_key_text(key)) & ((1 << 64) - 1) for key in keys]
    with psycopg.connect(postgresql_url.replace("+psycopg", "")) as conn:
        held = conn.execute("SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
                            " WHERE locktype = 'advisory' AND granted").fetchall()
    assert not set(ids) & {row[0] for row in held}
