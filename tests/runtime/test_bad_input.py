"""Bad input to the manager: a typed error with a clear message, and nothing changes."""

from __future__ import annotations

import pytest

from streamwarden import ConnectionManager, InvalidInputError


def snapshot(manager: ConnectionManager):
    health = manager.health()
    return ([(lc.lifecycle_id, lc.state, lc.refs) for lc in health.lifecycles],
            len(manager.audit.records()))  # type: ignore[attr-defined]


@pytest.mark.parametrize(("call", "match"), [
    (lambda m, c: m.market_data(None, symbols=["AAPL"]),
     "credentials must be a streamwarden.Credentials"),
    (lambda m, c: m.market_data(("PK", "secret"), symbols=["AAPL"]), "credentials must be"),
    (lambda m, c: m.market_data(c, symbols=[]), "at least one symbol"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], on_quote="print"),
     "quotes callback must be callable"),
    (lambda m, c: m.market_data(c, symbols="AAPL"), "not a single string"),
    (lambda m, c: m.market_data(c, symbols=["AAPL", "$$$"]), "malformed symbol"),
    (lambda m, c: m.market_data(c, symbols=[42]), "symbol must be a string"),
    (lambda m, c: m.market_data(c, symbols=7), "list of symbols"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], owner=""), "owner must be a string"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], owner="bell\x07"),
     "owner must be printable"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], correlation_id=""), "correlation_id"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], correlation_id="x" * 200),
     "correlation_id"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], correlation_id="new\nline"),
     "printable ASCII"),
    (lambda m, c: m.trade_updates(c, on_update="print"), "trade_updates callback must be"),
    (lambda m, c: m.close(timeout=-1), "timeout must be >= 0 seconds"),
    (lambda m, c: m.close(timeout="soon"), "timeout must be a number"),
    (lambda m, c: m.market_data(c, symbols=["AAPL"], on_quote="print"),
     "quotes callback must be"),
])
def test_bad_input_is_refused_and_changes_nothing(manager, creds, call, match):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        before = snapshot(manager)
        with pytest.raises(InvalidInputError, match=match):
            call(manager, creds)
        assert snapshot(manager) == before
        assert lease.is_live and not manager.health().closed


def test_bad_release_correlation_id_keeps_the_lease(manager, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    with pytest.raises(InvalidInputError):
        lease.release(correlation_id="\x00")
    assert lease.is_live and manager.health().lifecycles[0].refs == 1
    lease.release()


def test_negative_wait_ready_timeout(manager, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as lease, \
            pytest.raises(InvalidInputError, match="timeout"):
        lease.wait_ready(timeout=-0.1)


def test_symbols_are_normalised(manager, creds, factory):
    with manager.market_data(creds, symbols=[" aapl ", "brk.b", "*"]) as lease:
        assert lease.symbols == {"AAPL", "BRK.B", "*"}
        assert factory.latest().subscriptions == {
            (channel, symbol) for symbol in ("AAPL", "BRK.B", "*")
            for channel in ("quotes", "trades")}
