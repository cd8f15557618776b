"""``streamwarden demo`` runs end to end: simulator, real SDK, SQL audit log, report, verify."""

from __future__ import annotations

import sqlalchemy as sa

from streamwarden.audit.log import AuditLog
from streamwarden.cli import main


def test_demo_shares_drops_recovers_and_verifies(db_url, tmp_path, capsys):
    diagram = tmp_path / "lifecycle.mmd"
    assert main(["db", "upgrade", "--db", db_url]) == 0  # PostgreSQL is never migrated implicitly
    status = main(["demo", "--db", db_url, "--seconds", "1", "--plain",
                   "--diagram", str(diagram)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "reconnected" in out and "verify: OK" in out
    assert diagram.read_text().startswith("stateDiagram")
    with AuditLog.open(db_url) as audit:
        records = audit.query()
        assert audit.verify().ok
    (cid,) = {r.correlation_id for r in records}
    assert cid.startswith("demo-") and cid in out
    by_kind = {kind: [(r.event, r.owner) for r in records if r.kind == kind]
               for kind in ("market_data", "trade_updates")}
    market = [event for event, _ in by_kind["market_data"]]
    assert market.count("acquire") == 3 and market.count("release") == 3
    assert market[market.index("connection_lost") + 1] == "connected"
    assert market[-1] == "closed" and by_kind["trade_updates"][-1] == ("closed", None)
    owners = {owner for _, owner in by_kind["trade_updates"] if owner}
    assert owners == {"momentum", "pairs", "meanrev"}


def test_demo_on_live_endpoints_needs_credentials(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    db = tmp_path / "never.db"
    assert main(["demo", "--live-endpoints", "--db", f"sqlite:///{db}"]) == 1
    assert "APCA_API_KEY_ID" in capsys.readouterr().err
    if db.exists():  # nothing was recorded
        assert sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names() == []
