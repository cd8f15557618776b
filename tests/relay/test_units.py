"""The relay's pure parts: the clients file, the authenticator, paths and codecs, the wire
form of messages; and its command line's refusals (exit 2 usage, exit 1 typed errors), and
that it loads nothing heavy until run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import pytest

from streamwarden import Credentials
from streamwarden._frames import decode_frame
from streamwarden.errors import InvalidInputError
from streamwarden.marketdata import Trade
from streamwarden.relay import _protocol as wire
from streamwarden.relay._auth import Authenticator, Verdict, load_clients, token_digest
from tests.cli_run import modules_loaded_by, run, usage_error

MOMENT = datetime(2026, 11, 30, 15, tzinfo=UTC)
ACCOUNT = Credentials("PKUNITKEY0000001", "unit-secret-CANARY")


def test_clients_file_lines_comments_and_refusals(tmp_path: Path) -> None:
    good = tmp_path / "clients"
    good.write_text(f"# comment\n\nbot : {token_digest('t1').upper()}\nworker-2:"
                    f"{token_digest('t2')}\n")
    assert load_clients(good) == {"bot": token_digest("t1"), "worker-2": token_digest("t2")}
    for text, reason in ((f"bot:{token_digest('t')}\nbot:{token_digest('u')}\n", "twice"),
                         ("bot:not-hex\n", "line 1"), (f":{token_digest('t')}\n", "line 1")):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(InvalidInputError, match=reason):
            load_clients(bad)
    with pytest.raises(InvalidInputError, match="cannot read"):
        load_clients(tmp_path / "missing")


def test_authenticator_accepts_the_account_and_tokens_only() -> None:
    auth = Authenticator(ACCOUNT, {"bot": token_digest("bot-token")})
    assert auth.check("PKUNITKEY0000001", "unit-secret-CANARY") == Verdict(None)
    assert auth.check("bot", "bot-token") == Verdict("bot")
    assert auth.check("bot", "unit-secret-CANARY") is None
    assert auth.check("PKUNITKEY0000001", "bot-token") is None
    assert auth.check("nobody", "bot-token") is None
    assert auth.check(None, "x") is None and auth.check("bot", 7) is None


def test_routes_serve_alpacas_paths() -> None:
    assert wire.route("/v2/iex", "iex") == ("market_data", "iex")
    assert wire.route("/v2/sip", "iex") is None  # not the relay's feed
    assert wire.route("/v1beta1/opra", "iex") == ("option_data", "opra")
    assert wire.route("/v1beta1/other", "iex") is None
    assert wire.route("/v1beta3/crypto/us", "iex") == ("crypto_data", None)
    assert wire.route("/v1beta1/news", "iex") == ("news", None)
    assert wire.route("/stream", "iex") == ("trade_updates", None)
    assert wire.route("/elsewhere", "iex") is None


@pytest.mark.parametrize("count", [1, 15, 16, 70_000])
def test_arrays_of_encoded_elements_decode_as_arrays(count: int) -> None:
    encoder = wire.Encoder(capacity=2)
    trade = Trade("AAPL", Decimal("1.25"), Decimal(3), MOMENT)  # no trade id: no "i"
    element = encoder.element(trade, "trades", "msgpack")
    assert encoder.element(trade, "trades", "msgpack") is element  # encoded once
    decoded = msgpack.unpackb(wire.array([element] * count, "msgpack"), timestamp=3)
    assert len(decoded) == count
    assert decoded[0] == {"T": "t", "S": "AAPL", "p": 1.25, "s": 3, "t": MOMENT}
    text = wire.array([encoder.element(trade, "trades", "json")] * 2, "json")
    assert json.loads(text)[1]["t"] == "2026-11-30T15:00:00.000000Z"
    for other in range(3):  # older entries leave the bounded cache
        encoder.element(Trade("AAPL", Decimal(other), Decimal(1), MOMENT), "trades", "json")
    assert encoder.element(trade, "trades", "msgpack") is not element


def test_codecs_refuse_what_they_cannot_carry() -> None:
    with pytest.raises(TypeError, match="not a message"):
        wire.wire_message(object(), "quotes")
    for codec in ("msgpack", "json"):
        with pytest.raises(TypeError):
            wire.encode({"x": object()}, codec)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="msgpack"):
        decode_frame(b"\xc1", "msgpack")
    with pytest.raises(ValueError, match="JSON"):
        decode_frame("{", "json")
    assert decode_frame('{"a": 1}', "msgpack") == {"a": 1}  # JSON text on a msgpack socket


def test_relay_command_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert "HOST:PORT" in usage_error(capsys, "relay", "--listen", "nowhere")
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    status, _, err = run(capsys, "relay")
    assert status == 1 and "APCA_API_KEY_ID" in err
    monkeypatch.setenv("APCA_API_KEY_ID", "PKUNITKEY0000001")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "unit-secret-CANARY")
    status, _, err = run(capsys, "relay", "--tls-cert", tmp_path / "cert.pem")
    assert status == 1 and "--tls-key" in err
    status, _, err = run(capsys, "relay", "--tls-cert", tmp_path / "cert.pem", "--tls-key",
                         tmp_path / "key.pem")
    assert status == 1 and "TLS" in err
    status, _, err = run(capsys, "relay", "--clients", tmp_path / "none")
    assert status == 1 and "clients file" in err
    status, _, err = run(capsys, "relay", "--fleet", "postgresql://127.0.0.1:9/fleet")
    assert status == 1 and "--fleet and --advertise go together" in err
    status, _, err = run(capsys, "relay", "--fleet", "postgresql://127.0.0.1:9/fleet",
                         "--advertise", "http://not-a-websocket")
    assert status == 1 and "advertise must be a ws:// or wss:// URL" in err
    assert "unit-secret-CANARY" not in err


def test_relay_help_loads_nothing_heavy() -> None:
    loaded = modules_loaded_by(["relay", "--help"])
    assert "streamwarden.relay.command" in loaded
    assert not {"alpaca", "sqlalchemy", "websockets", "streamwarden.relay._server",
                "streamwarden.runtime.manager"} & loaded
