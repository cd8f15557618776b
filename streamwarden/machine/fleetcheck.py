"""A bounded model of fleet ownership (:mod:`streamwarden.fleet`): two members compete for one
stream key through a PostgreSQL advisory lock, a row with an epoch and heartbeats, while their
processes crash and their database connections are cut. Pure; explored breadth-first.

Time is discrete (``tick``). A member's ``since`` counts ticks since its last successful
heartbeat; the row's ``age`` ticks since the database last recorded one. The protocol's
promise is the step-down bound: an owner whose heartbeat fails or overruns has closed its
upstream within ``step_down`` ticks of its last successful heartbeat (time cannot pass that
point while it has not); a contender takes over only while it holds the lock and the row's
age exceeds ``takeover_wait``.

Checked on every step: at most one upstream open for the key (INV5 per fleet), and each
takeover's epoch above every earlier one (the row's epoch never goes down, so above the row's).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace

Members = tuple["Member", "Member"]


@dataclass(frozen=True)
class Protocol:
    """The protocol's knobs, in ticks: a correct one has ``step_down`` (heartbeat interval +
    timeout + grace) <= ``takeover_wait`` and ``steps_down``."""

    step_down: int = 3
    takeover_wait: int = 3
    steps_down: bool = True
    #: A new owner's epoch is the row's + 1, in the statement that records it (else, broken:
    #: the member's own previous epoch + 1).
    epoch_from_row: bool = True
    max_crashes: int = 1
    max_cuts: int = 2
    max_epoch: int = 3


@dataclass(frozen=True)
class Member:
    """One member: process alive, database connection up, whether it owns, its upstream is
    open, the epoch it took over with, ticks since its last successful heartbeat."""

    alive: bool = True
    connected: bool = True
    owner: bool = False
    upstream: bool = False
    epoch: int = 0
    since: int = 0


@dataclass(frozen=True)
class State:
    """The database (who holds the lock, the row's owner, epoch and heartbeat age) and both
    members, with the fault budget spent so far."""

    members: Members = (Member(), Member())
    lock: int | None = None
    row_owner: int | None = None
    row_epoch: int = 0
    age: int = 0
    crashes: int = 0
    cuts: int = 0


@dataclass(frozen=True)
class FleetCheckResult:
    """``violation`` is None when every property held; else what failed and the events that
    lead there from the initial state."""

    states: int
    violation: str | None
    trace: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Whether every property held in every reachable state."""
        return self.violation is None


def _set(state: State, index: int, member: Member, **fields: object) -> State:
    members = list(state.members)
    members[index] = member
    return replace(state, members=(members[0], members[1]), **fields)  # type: ignore[arg-type]


def _tick(state: State, protocol: Protocol) -> State | None:
    cap = max(protocol.step_down, protocol.takeover_wait) + 1
    if protocol.steps_down and any(m.upstream and m.since >= protocol.step_down
                                   for m in state.members):
        return None  # the step-down bound: time does not pass it with the upstream open
    members = tuple(replace(m, since=min(cap, m.since + 1)) for m in state.members)
    return replace(state, members=(members[0], members[1]), age=min(cap, state.age + 1))


def _member_events(state: State, index: int, protocol: Protocol) -> Iterator[tuple[str,
                                                                               State]]:
    member = state.members[index]
    if not member.alive:
        return
    lock = None if state.lock == index else state.lock
    if state.crashes < protocol.max_crashes:
        yield f"crash({index})", _set(state, index, Member(alive=False, connected=False),
                                      lock=lock, crashes=state.crashes + 1)
    if member.connected and state.cuts < protocol.max_cuts:
        yield f"cut({index})", _set(state, index, replace(member, connected=False), lock=lock,
                                    cuts=state.cuts + 1)
    if not member.connected:
        yield f"reconnect({index})", _set(state, index, replace(member, connected=True))
    if member.owner:
        yield from _owner_events(state, index, member, protocol)
    elif member.connected:
        yield from _contender_events(state, index, member, protocol)


def _owner_events(state: State, index: int, member: Member,
                  protocol: Protocol) -> Iterator[tuple[str, State]]:
    holds = (member.connected and state.lock == index and state.row_owner == index
             and state.row_epoch == member.epoch)
    if holds:
        yield f"heartbeat({index})", _set(state, index, replace(member, since=0), age=0)
        yield f"release({index})", _set(state, index, replace(member, owner=False,
                                                              upstream=False),
                                        lock=None, age=protocol.takeover_wait + 1)
    elif protocol.steps_down:
        yield f"step_down({index})", _set(state, index, replace(member, owner=False,
                                                                upstream=False))


def _contender_events(state: State, index: int, member: Member,
                      protocol: Protocol) -> Iterator[tuple[str, State]]:
    if state.lock is None:
        yield f"lock({index})", replace(state, lock=index)
    free = state.row_owner is None or state.age > protocol.takeover_wait
    if state.lock == index and free and state.row_epoch < protocol.max_epoch:
        epoch = (state.row_epoch if protocol.epoch_from_row else member.epoch) + 1
        taken = replace(member, owner=True, upstream=True, epoch=epoch, since=0)
        yield f"takeover({index}, epoch {epoch})", _set(state, index, taken, row_owner=index,
                                                        row_epoch=epoch, age=0)


def successors(state: State, protocol: Protocol) -> Iterator[tuple[str, State]]:
    """Every event enabled in ``state`` and the state it leads to."""
    ticked = _tick(state, protocol)
    if ticked is not None:
        yield "tick", ticked
    for index in (0, 1):
        yield from _member_events(state, index, protocol)


def violation(before: State, event: str, after: State) -> str | None:
    """The property that the step ``before`` --``event``--> ``after`` breaks, if any."""
    open_upstreams = [m for m in after.members if m.upstream]
    if len(open_upstreams) > 1:
        return "INV5: two upstream connections open for one stream key"
    if event.startswith("takeover") and after.row_epoch <= before.row_epoch:
        return "epochs: a takeover did not increase the epoch"
    return None


def fleet_check(protocol: Protocol | None = None) -> FleetCheckResult:
    """Explore every state reachable under ``protocol`` (default: the one :mod:`streamwarden.fleet`
    implements) and check the properties of the module docstring on every step."""
    protocol = protocol or Protocol()
    start = State()
    parents: dict[State, tuple[State, str] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for event, after in successors(state, protocol):
            broken = violation(state, event, after)
            if broken is not None:
                return FleetCheckResult(len(parents), broken, (*_trace(parents, state), event))
            if after not in parents:
                parents[after] = (state, event)
                queue.append(after)
    return FleetCheckResult(len(parents), None, ())


def _trace(parents: dict[State, tuple[State, str] | None], state: State) -> tuple[str, ...]:
    events: list[str] = []
    step = parents[state]
    while step is not None:
        state, event = step
        events.append(event)
        step = parents[state]
    return tuple(reversed(events))
