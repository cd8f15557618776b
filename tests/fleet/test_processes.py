"""Fleet ownership between real processes over the real PostgreSQL (STREAMWARDEN_TEST_PG_URL)."""

from __future__ import annotations

import signal
import time

import sqlalchemy as sa
import ulid

from streamwarden.fleet import FleetTiming
from tests.audit.tcp_proxy import TcpProxy
from tests.fleet.conftest import Member

TAKEOVER_BOUND = 10.0
"""The brief's promise: a survivor takes over within 10 s of the owner's death."""


def _fingerprint() -> str:
    return f"fleet-test-{str(ulid.ULID()).lower()}"


def test_a_survivor_takes_over_within_10_s_of_the_owner_being_killed(postgresql_url, members):
    """With the default timing: the README promises takeover_wait + 2 x heartbeat_interval."""
    fingerprint = _fingerprint()
    first = Member(postgresql_url, fingerprint, "first", default_timing=True)
    members.append(first)
    first.wait_for(10, role="owner", epoch=1)
    second = Member(postgresql_url, fingerprint, "second", default_timing=True)
    members.append(second)
    follower = second.wait_for(10, role="follower")
    assert (follower["epoch"], follower["owner"]) == (1, "first")
    assert follower["url"] == "ws://first.invalid:1"  # the owner's advertised URL

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(5)
    killed = time.time()
    taken = second.wait_for(TAKEOVER_BOUND, role="owner")
    assert taken["epoch"] == 2
    defaults = FleetTiming()
    assert taken["t"] - killed < defaults.takeover_wait + 2 * defaults.heartbeat_interval


def test_an_owner_cut_from_the_database_steps_down_before_the_other_takes_over(
        postgresql_url, members):
    fingerprint = _fingerprint()
    parsed = sa.make_url(postgresql_url)
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    through_proxy = postgresql_url.replace(f"{parsed.host}:{parsed.port or 5432}",
                                           f"127.0.0.1:{proxy.port}", 1)
    assert through_proxy != postgresql_url
    try:
        cut = Member(through_proxy, fingerprint, "cut")
        members.append(cut)
        cut.wait_for(10, role="owner", epoch=1)
        other = Member(postgresql_url, fingerprint, "other")
        members.append(other)
        other.wait_for(10, role="follower", epoch=1)

        cut_at = time.time()
        proxy.down()
        stepped_down = cut.wait_for(10, after=cut_at, role="pending")
        taken = other.wait_for(TAKEOVER_BOUND, after=cut_at, role="owner")
        assert taken["epoch"] == 2
        assert stepped_down["t"] < taken["t"]
        assert cut.process.poll() is None  # it stepped down, it did not die
    finally:
        proxy.down()


def test_a_released_key_is_taken_over_with_the_next_epoch(postgresql_url, members):
    fingerprint = _fingerprint()
    first = Member(postgresql_url, fingerprint, "first")
    members.append(first)
    first.wait_for(10, role="owner", epoch=1)
    second = Member(postgresql_url, fingerprint, "second")
    members.append(second)
    second.wait_for(10, role="follower", epoch=1)
    assert first.process.stdin is not None
    first.process.stdin.write("stop\n")
    first.process.stdin.flush()
    assert first.process.wait(10) == 0
    taken = second.wait_for(TAKEOVER_BOUND, role="owner")
    assert taken["epoch"] == 2
