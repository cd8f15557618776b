"""The registry's bookkeeping, directly: counts, the drop_after arithmetic, idempotence."""

from __future__ import annotations

from typing import Any

import pytest

from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Faults
from streamwarden.simulator.registry import Registry, Session


def _session(registry: Registry, kind: Any = MARKET_DATA) -> Session:
    return registry.open_session(kind, "/v2/iex", "msgpack", connection=None)  # type: ignore[arg-type]


def test_drop_after_allows_exactly_n_then_drops() -> None:
    registry = Registry(Faults(drop_after=5), quote_rate=0.0)
    session = _session(registry)
    assert registry.reserve_data(session, 3) == (3, False)
    assert registry.reserve_data(session, 3) == (2, True)  # only 2 more, then drop
    assert registry.reserve_data(session, 3) == (0, False)  # dropped: nothing more
    assert registry.mark_dropped(session) is False
    stats = registry.snapshot()
    assert (stats.kind(MARKET_DATA).data_messages, stats.kind(MARKET_DATA).drops) == (5, 1)


def test_drop_once_is_spent_by_the_first_drop_and_rearmed_by_set_faults() -> None:
    registry = Registry(Faults(drop_after=1, drop_once=True), quote_rate=0.0)
    first, second = _session(registry), _session(registry)
    assert registry.reserve_data(first, 1) == (1, True)
    assert registry.reserve_data(second, 4) == (4, False)
    registry.set_faults(Faults(drop_after=5, drop_once=True))
    assert registry.reserve_data(second, 4) == (1, True)  # 4 + 1 reaches the new limit


def test_fault_set_after_the_count_drops_on_the_next_send() -> None:
    registry = Registry(Faults(), quote_rate=0.0)
    session = _session(registry)
    registry.reserve_data(session, 10)
    registry.set_faults(Faults(drop_after=3))
    assert registry.reserve_data(session, 1) == (0, True)


def test_close_is_idempotent_and_closed_sessions_take_nothing() -> None:
    registry = Registry(Faults(), quote_rate=0.0)
    session = _session(registry, TRADE_UPDATES)
    registry.close_session(session)
    registry.close_session(session)
    assert registry.snapshot().kind(TRADE_UPDATES).open == 0
    assert registry.reserve_data(session, 1) == (0, False)
    assert registry.mark_dropped(session) is False
    assert registry.snapshot().connections[0].is_open is False


def test_wait_for_propagates_the_predicate_error() -> None:
    registry = Registry(Faults(), quote_rate=0.0)

    def broken(stats: Any) -> bool:
        raise RuntimeError("bad predicate")

    with pytest.raises(RuntimeError, match="bad predicate"):
        registry.wait_for(broken, timeout=1.0)
    assert registry.wait_for(lambda stats: registry.snapshot() == stats, 1.0)
