"""Fleet ownership of stream keys over PostgreSQL: at most one upstream per key across processes.

Several processes (relays, library managers) that share a PostgreSQL *fleet database* agree, per
stream key, on one **owner**, which opens the upstream connection to Alpaca; the others are
**followers**, which learn the owner's advertised URL and use it as their upstream.

The protocol (one coordinator thread per :class:`Fleet`, one dedicated connection):

- Ownership is a session advisory lock (``pg_try_advisory_lock`` on a stable 64-bit hash of the
  key) on the fleet's own unpooled connection, plus a row of ``streamwarden_fleet_owner`` whose
  ``epoch`` (the fencing token) the new owner increments in the same statement that records it.
- The owner heartbeats every ``heartbeat_interval``: it checks that its connection still holds
  the lock and sets ``heartbeat_at = now()``, each step bounded by ``heartbeat_timeout``
  (client side, and ``statement_timeout`` server side). When a heartbeat fails or overruns it
  **steps down at once**: its listener is told (``role == "pending"``), so it stops its upstream.
- A contender takes over only when it holds the lock **and** the row's ``heartbeat_at`` is older
  than ``takeover_wait`` (database time). Timing argument: the owner's last successful heartbeat
  was sent at S <= heartbeat_at; its next one starts by S + heartbeat_interval and fails or
  succeeds by S + heartbeat_interval + heartbeat_timeout, when it has stepped down; its upstream
  is closed ``step_down_grace`` later. ``takeover_wait >= heartbeat_interval + heartbeat_timeout
  + step_down_grace`` (checked), so by the time anybody can start, the old owner has stopped.
  A process that is paused (SIGSTOP, a long GC) past that bound is the classic fencing case:
  the epoch in every audit record tells which owner wrote what.
- A dead owner's lock is released by PostgreSQL when its backend's connection drops; the
  dedicated connection uses TCP keepalives and ``tcp_user_timeout`` so a cut is noticed within
  about ``heartbeat_timeout`` on the client side too.

The table is created idempotently (``CREATE TABLE IF NOT EXISTS`` under a transaction-scoped
advisory lock) on :meth:`Fleet.start`, not by an Alembic migration: the fleet database may be a
different database from the audit log's, and its rows are coordination state, not history.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

import psycopg

from streamwarden._keys import StreamKey
from streamwarden.clock import Clock, SystemClock
from streamwarden.errors import FleetError, InvalidInputError

#: The fleet table.
TABLE = "streamwarden_fleet_owner"
#: Transaction-scoped advisory lock that serialises the table's creation across processes.
_CREATE_LOCK = 0x5357_464C_4545_5401
_UNSIGNED_64 = (1 << 64) - 1

_log = logging.getLogger(__name__)
T = TypeVar("T")

Role = Literal["owner", "follower", "pending"]


@dataclass(frozen=True)
class Ownership:
    """What this fleet member knows about one stream key.

    ``role``: ``owner`` (this member holds the lock and the row: open the upstream),
    ``follower`` (another member owns it: use ``advertised_url`` as the upstream), ``pending``
    (nobody usable owns it now, or this member just stepped down: open nothing). ``epoch``,
    ``owner`` and ``advertised_url`` describe the current (or, while pending, the latest known)
    owner. Immutable.
    """

    role: Role
    epoch: int | None = None
    owner: str | None = None
    advertised_url: str | None = None


PENDING = Ownership("pending")

Listener = Callable[[Ownership], None]
"""Told each change of a key's ownership, on the fleet's coordinator thread; must return at once
(e.g. hand the news to an event loop) and must not call back into the fleet and wait."""


def stream_key_text(key: StreamKey) -> str:
    """The key's row name: ``fingerprint/kind/paper|live/feed`` (no secret: the fingerprint is a
    keyed hash)."""
    return f"{key.fingerprint}/{key.kind}/{'paper' if key.paper else 'live'}/{key.feed or '-'}"


def lock_id(text: str) -> int:
    """A stable signed 64-bit advisory-lock id for a row name (BLAKE2b, so the same in every
    process and Python version)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8, person=b"sw-fleet").digest()
    return int.from_bytes(digest, "big", signed=True)


def _conninfo(url: object) -> str:
    if not isinstance(url, str) or not url.startswith(("postgresql", "postgres://")):
        raise InvalidInputError("the fleet URL must be a postgresql:// (or "
                                "postgresql+psycopg://) URL", operation="fleet")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise InvalidInputError("the fleet URL must be a postgresql:// (or "
                                "postgresql+psycopg://) URL", operation="fleet")
    return f"postgresql://{rest}"


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds",
                                operation="fleet")
    return float(value)


@dataclass(frozen=True)
class FleetTiming:
    """The fleet's bounds, in seconds, checked: ``heartbeat_timeout <= heartbeat_interval`` and
    ``takeover_wait >= heartbeat_interval + heartbeat_timeout + step_down_grace`` (the step-down
    argument of the module docstring).

    Raises (on construction):
        InvalidInputError: a bound that is not positive, or that breaks those inequalities.
    """

    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 1.0
    step_down_grace: float = 1.0
    takeover_wait: float = 3.5

    def __post_init__(self) -> None:
        for name in ("heartbeat_interval", "heartbeat_timeout", "step_down_grace",
                     "takeover_wait"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        if self.heartbeat_timeout > self.heartbeat_interval:
            raise InvalidInputError("heartbeat_timeout must not exceed heartbeat_interval",
                                    operation="fleet")
        step_down = self.heartbeat_interval + self.heartbeat_timeout + self.step_down_grace
        if self.takeover_wait < step_down:
            raise InvalidInputError(
                f"takeover_wait must be at least heartbeat_interval + heartbeat_timeout + "
                f"step_down_grace ({step_down}s): an owner that lost its lock must have stepped "
                f"down before anybody takes over", operation="fleet")


@dataclass
class _Claim:
    text: str
    lock: int
    listener: Listener
    ownership: Ownership = PENDING
    locked: bool = False
    released: bool = False


class Fleet:
    """This process's membership of a fleet: claims stream keys and tells each claim's listener
    whether it owns the key, follows another member, or must wait.

    Args:
        url: the fleet database (``postgresql://`` or ``postgresql+psycopg://``; the same
            PostgreSQL may hold the audit log). Never logged.
        advertise: the URL followers should use as their upstream while this member owns a
            key (a relay's ``ws://host:port``); None: followers of this member have no upstream
            and wait.
        member: this member's name in the table (default ``host:pid:random``).
        timing: the bounds (:class:`FleetTiming`).
        clock: monotonic time for the heartbeat schedule (default the system clock).

    Raises:
        InvalidInputError: a malformed URL, advertise URL or member name.

    Thread-safety: every method may be called from any thread except the coordinator's own
    (listeners must not call :meth:`claim`, :meth:`release` or :meth:`close`).
    """

    def __init__(self, url: str, *, advertise: str | None = None, member: str | None = None,
                 timing: FleetTiming | None = None, clock: Clock | None = None) -> None:
        self._conninfo = _conninfo(url)
        if advertise is not None and (not isinstance(advertise, str)
                                      or not advertise.startswith(("ws://", "wss://"))):
            raise InvalidInputError("advertise must be a ws:// or wss:// URL", operation="fleet")
        if member is not None and (not isinstance(member, str) or not member.strip()):
            raise InvalidInputError("member must be a non-empty string", operation="fleet")
        self.advertise = advertise
        self.member = member or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.timing = timing or FleetTiming()
        self._clock = clock or SystemClock()
        self._claims: dict[str, _Claim] = {}
        self._guard = threading.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._background: set[asyncio.Task[Any]] = set()
        # Serialises rounds and releases on the connection, so that a release never races a
        # round that is taking the same key (which would leave its lock held and unclaimed).
        self._database = asyncio.Lock()

    # Public API (any thread).

    def start(self) -> Self:
        """Start the coordinator thread and create the fleet table if needed.

        Raises:
            FleetError: the fleet database could not be reached within the bound (nothing
                keeps running, and the fleet is closed), or the fleet was closed.

        Idempotent while running.
        """
        if self._closing:
            raise FleetError("the fleet is closed", operation="fleet")
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._wake = asyncio.Event()
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="streamwarden-fleet", daemon=True)
        self._thread.start()
        if not ready.wait(self._connect_bound()):
            self._closing = True
            raise FleetError("the fleet's coordinator thread did not start", operation="fleet")
        try:
            self._call(self._setup(), self._connect_bound() + self.timing.heartbeat_timeout)
        except FleetError:
            self._stop_thread()
            raise
        asyncio.run_coroutine_threadsafe(self._run(), loop)
        return self

    def claim(self, key: StreamKey, listener: Listener) -> Ownership:
        """Contend for ``key``; ``listener`` is told each change of its ownership from now on.
        Returns the ownership known now (``pending`` until the coordinator's next round,
        which this call starts at once).

        Raises:
            InvalidInputError: the key is already claimed by this fleet member.
            FleetError: the fleet is not started or is closed.
        """
        text = stream_key_text(key)
        with self._guard:
            if text in self._claims:
                raise InvalidInputError("this stream key is already claimed by this fleet "
                                        "member", operation="fleet")
            if self._loop is None or self._closing:
                raise FleetError("the fleet is not started or is closed", operation="fleet")
            self._claims[text] = _Claim(text, lock_id(text), listener)
        self._loop.call_soon_threadsafe(self._poke)
        return PENDING

    def ownership(self, key: StreamKey) -> Ownership:
        """The ownership of ``key`` as known now (``pending`` when not claimed)."""
        with self._guard:
            claim = self._claims.get(stream_key_text(key))
            return claim.ownership if claim is not None else PENDING

    def epoch(self, key: StreamKey) -> int | None:
        """The epoch of ``key``'s current (or latest known) owner, None when none is known."""
        return self.ownership(key).epoch

    def release(self, key: StreamKey, *, wait: bool = True) -> None:
        """Stop contending for ``key``. As its owner (call this once the upstream is closed):
        mark the row released, so another member takes over without waiting for
        ``takeover_wait``, and unlock it. The listener is not called again. With ``wait``,
        returns once done, within ``2 x heartbeat_timeout``; without, returns at once (for an
        event loop). A release that cannot reach the database drops the connection, which
        releases the lock as well.

        A no-op for a key not claimed or a fleet not running.
        """
        with self._guard:
            claim = self._claims.pop(stream_key_text(key), None)
            if claim is not None:
                claim.released = True
        if claim is None or self._loop is None or self._closing:
            return
        future = asyncio.run_coroutine_threadsafe(self._let_go(claim), self._loop)
        if wait:
            with contextlib.suppress(TimeoutError):
                future.result(2 * self.timing.heartbeat_timeout)

    def close(self) -> None:
        """Release every claim, close the connection, end the coordinator thread (bounded).

        Idempotent.
        """
        with self._guard:
            if self._loop is None or self._closing:
                return
            self._closing = True
            claims, self._claims = list(self._claims.values()), {}
            for claim in claims:
                claim.released = True
        with contextlib.suppress(FleetError):
            self._call(self._shutdown(claims), 2 * self.timing.heartbeat_timeout + 1.0)
        self._stop_thread()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # Plumbing.

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise FleetError("the fleet database did not answer in time",
                             operation="fleet") from None

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._closing = True
        with contextlib.suppress(FleetError):
            self._call(self._cancel_tasks(), self.timing.heartbeat_timeout + 5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.timing.heartbeat_timeout + 5.0)

    @staticmethod
    async def _cancel_tasks() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _connect_bound(self) -> float:
        return max(2.0, self.timing.heartbeat_timeout)

    # Coordinator (its own loop and thread).

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        """The dedicated connection, within the connect bound: autocommit, TCP keepalives and
        ``tcp_user_timeout`` on both ends (so either side notices a cut within seconds, and the
        server then releases the session's locks), ``statement_timeout`` =
        ``heartbeat_timeout``."""
        return await self._within(self._open(), self._connect_bound())

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        timeout_ms = int(self.timing.heartbeat_timeout * 1000)
        conn = await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, connect_timeout=max(2, int(self._connect_bound())),
            keepalives=1, keepalives_idle=1, keepalives_interval=1, keepalives_count=2,
            tcp_user_timeout=timeout_ms, application_name="streamwarden-fleet")
        for setting, value in (("statement_timeout", timeout_ms), ("tcp_keepalives_idle", 1),
                               ("tcp_keepalives_interval", 1), ("tcp_keepalives_count", 2),
                               ("tcp_user_timeout", timeout_ms)):
            await conn.execute(f"SET {setting} = {int(value)}")
        return conn

    async def _setup(self) -> None:
        try:
            conn = await self._connect()
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CREATE_LOCK,))
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                    " stream_key text PRIMARY KEY, owner text NOT NULL,"
                    " epoch bigint NOT NULL CHECK (epoch >= 1), advertised_url text,"
                    " acquired_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL)")
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise FleetError(f"the fleet database is unreachable or refused the setup "
                             f"({type(exc).__name__})", operation="fleet") from None
        self._conn = conn

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while not self._closing:
                started = self._clock.monotonic()
                self._wake.clear()
                await self._round()
                remaining = self.timing.heartbeat_interval - (self._clock.monotonic() - started)
                if remaining > 0:  # asyncio.wait: a timeout that never cancels this task
                    waiter = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({waiter}, timeout=remaining)
                    waiter.cancel()
        finally:  # whatever ends the coordinator, no owner may outlive its heartbeats
            self._announce_all(PENDING)

    async def _round(self) -> None:
        """One round: heartbeat the owned keys, contend for the others, all within
        ``heartbeat_timeout``; any failure steps down every owned key and drops the
        connection (whose loss releases every lock)."""
        if self._conn is None:
            try:
                self._conn = await self._connect()
            except (psycopg.Error, OSError, TimeoutError):
                self._announce_all(PENDING)
                return
        async with self._database:
            if not await self._bounded(self._work(self._conn)):
                self._announce_all(PENDING)
                self._discard()

    async def _within(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """``coroutine``'s result, or TimeoutError after ``timeout`` (the overrun is abandoned
        in the background). Unlike ``asyncio.wait_for``, never cancels the calling task, so a
        timeout cannot be mistaken for a cancellation of the coordinator."""
        task = asyncio.ensure_future(coroutine)
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            task.cancel()
            self._keep(task)
            raise TimeoutError
        return task.result()

    async def _bounded(self, coroutine: Coroutine[Any, Any, object]) -> bool:
        """Run ``coroutine`` on the connection for at most ``heartbeat_timeout``; whether it
        completed without error. An overrun is abandoned in the background."""
        task = asyncio.ensure_future(coroutine)
        done, _ = await asyncio.wait({task}, timeout=self.timing.heartbeat_timeout)
        if not done:
            task.cancel()
            self._keep(task)
            return False
        error = task.exception()
        if error is not None and not isinstance(error, psycopg.Error | OSError):
            raise error
        return error is None

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._keep(asyncio.ensure_future(self._close_quietly(conn)))

    @staticmethod
    async def _close_quietly(conn: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(psycopg.Error, OSError):
            await conn.close()

    async def _work(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with self._guard:
            claims = list(self._claims.values())
        owned = [claim for claim in claims if claim.ownership.role == "owner"]
        if owned:
            await self._heartbeat(conn, owned)
        for claim in claims:
            if claim.ownership.role != "owner":
                await self._contend(conn, claim)

    async def _heartbeat(self, conn: psycopg.AsyncConnection[Any], owned: list[_Claim]) -> None:
        cursor = await conn.execute(
            "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND granted AND objsubid = 1")
        held = {(classid << 32) | objid for classid, objid in await cursor.fetchall()}
        cursor = await conn.execute(
            f"UPDATE {TABLE} SET heartbeat_at = now() WHERE owner = %s AND stream_key = ANY(%s)"
            " RETURNING stream_key, epoch",
            (self.member, [claim.text for claim in owned if (claim.lock & _UNSIGNED_64) in held]))
        epochs = dict(await cursor.fetchall())
        for claim in owned:
            if epochs.get(claim.text) != claim.ownership.epoch:
                claim.locked = (claim.lock & _UNSIGNED_64) in held
                self._announce(claim, Ownership("pending", claim.ownership.epoch,
                                                claim.ownership.owner,
                                                claim.ownership.advertised_url))

    async def _contend(self, conn: psycopg.AsyncConnection[Any], claim: _Claim) -> None:
        if not claim.locked:
            cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", (claim.lock,))
            row = await cursor.fetchone()
            claim.locked = bool(row and row[0])
        if claim.locked:
            cursor = await conn.execute(
                f"INSERT INTO {TABLE} AS t (stream_key, owner, epoch, advertised_url,"
                " acquired_at, heartbeat_at) VALUES (%s, %s, 1, %s, now(), now())"
                " ON CONFLICT (stream_key) DO UPDATE SET owner = excluded.owner,"
                " epoch = t.epoch + 1, advertised_url = excluded.advertised_url,"
                " acquired_at = now(), heartbeat_at = now()"
                " WHERE t.heartbeat_at < now() - make_interval(secs => %s) RETURNING epoch",
                (claim.text, self.member, self.advertise, self.timing.takeover_wait))
            won = await cursor.fetchone()
            if won is not None:
                self._announce(claim, Ownership("owner", int(won[0]), self.member,
                                                self.advertise))
                return
        cursor = await conn.execute(
            f"SELECT owner, epoch, advertised_url,"
            f" extract(epoch FROM now() - heartbeat_at)::float8 FROM {TABLE}"
            f" WHERE stream_key = %s", (claim.text,))
        row = await cursor.fetchone()
        if row is None:
            self._announce(claim, PENDING)
            return
        owner, epoch, url, age = row
        fresh = not claim.locked and age <= self.timing.takeover_wait and url is not None
        self._announce(claim, Ownership("follower" if fresh else "pending", int(epoch), owner,
                                        url))

    async def _let_go(self, claim: _Claim) -> None:
        async with self._database:  # after the round in progress, which may have taken it
            if not await self._bounded(self._release(claim)):
                self._announce_all(PENDING)
                self._discard()

    async def _release(self, claim: _Claim) -> None:
        conn = self._conn
        if conn is None:
            return
        if claim.ownership.role == "owner":
            await conn.execute(
                f"UPDATE {TABLE} SET heartbeat_at = 'epoch' WHERE stream_key = %s"
                " AND owner = %s AND epoch = %s",
                (claim.text, self.member, claim.ownership.epoch))
        if claim.locked:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (claim.lock,))

    async def _shutdown(self, claims: list[_Claim]) -> None:
        async with self._database:
            for claim in claims:
                if not await self._bounded(self._release(claim)):
                    break
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(TimeoutError):
                await self._within(self._close_quietly(conn), self.timing.heartbeat_timeout)

    def _announce_all(self, ownership: Ownership) -> None:
        with self._guard:
            claims = list(self._claims.values())
        for claim in claims:
            claim.locked = False
            self._announce(claim, ownership if claim.ownership.role != "owner" else Ownership(
                "pending", claim.ownership.epoch, claim.ownership.owner,
                claim.ownership.advertised_url))

    def _announce(self, claim: _Claim, ownership: Ownership) -> None:
        with self._guard:
            if claim.ownership == ownership:
                return
            claim.ownership = ownership
            if claim.released:  # kept for its release, not told: it asked to hear no more
                return
        try:
            claim.listener(ownership)
        except Exception:  # a listener's bug must not stop the heartbeats of the others
            _log.exception("fleet listener failed")
