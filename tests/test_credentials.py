"""Credentials: validation, redaction, fingerprint."""

from __future__ import annotations

import pickle

import pytest

from streamwarden import Credentials, InvalidInputError, Secret
from streamwarden.config import DEFAULT_FINGERPRINT_KEY

KEY = DEFAULT_FINGERPRINT_KEY.encode()


def test_repr_and_str_never_show_key_or_secret():
    creds = Credentials("PKVISIBLEKEYID000001", "very-secret-value")
    for text in (repr(creds), str(creds), repr(creds.secret_key), str(creds.secret_key),
                 f"{creds}", f"{creds.secret_key!r}"):
        assert "PKVISIBLEKEYID000001" not in text
        assert "very-secret-value" not in text
    assert creds.secret_key.reveal() == "very-secret-value"


def test_secret_refuses_pickling_and_compares_in_constant_time():
    secret = Secret("abc")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    assert secret == Secret("abc") and secret != Secret("abd")
    assert hash(secret) == hash(Secret("abc"))
    assert secret.__eq__("abc") is NotImplemented


@pytest.mark.parametrize(("key_id", "secret", "match"), [
    ("", "s", "api_key_id must not be empty"),
    ("PK1", "", "secret_key must not be empty"),
    (None, "s", "api_key_id must be a string"),
    ("PK1", 42, "secret_key must be a string"),
    ("PK 1", "s", "printable ASCII without whitespace"),
    ("PK1", "se\ncret", "printable ASCII without whitespace"),
    ("PK1", "sécret", "printable ASCII"),
])
def test_bad_credentials_are_refused_without_echoing_them(key_id, secret, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        Credentials(key_id, secret)
    if isinstance(secret, str) and len(secret) > 1:
        assert secret not in str(caught.value)


def test_paper_must_be_a_bool():
    with pytest.raises(InvalidInputError, match="paper must be a bool"):
        Credentials("PK1", "s", paper="yes")  # type: ignore[arg-type]


def test_from_env_reads_alpacas_variables():
    creds = Credentials.from_env({"APCA_API_KEY_ID": "PKENV", "APCA_API_SECRET_KEY": "envsecret"})
    assert creds.paper is True and creds.api_key_id == "PKENV"
    live = Credentials.from_env({"APCA_API_KEY_ID": "PKENV", "APCA_API_SECRET_KEY": "x",
                                 "APCA_PAPER": "False"})
    assert live.paper is False
    assert Credentials(live.api_key_id, live.secret_key, paper=False) == live


@pytest.mark.parametrize(("env", "match"), [
    ({}, "APCA_API_KEY_ID, APCA_API_SECRET_KEY"),
    ({"APCA_API_KEY_ID": "PK"}, "APCA_API_SECRET_KEY"),
    ({"APCA_API_KEY_ID": "PK", "APCA_API_SECRET_KEY": "s", "APCA_PAPER": "maybe"}, "APCA_PAPER"),
])
def test_from_env_names_what_is_missing(env, match):
    with pytest.raises(InvalidInputError, match=match):
        Credentials.from_env(env)


def test_fingerprint_is_keyed_and_ignores_the_secret():
    a = Credentials("PKSAME", "secret-one")
    b = Credentials("PKSAME", "secret-two")
    live = Credentials("PKSAME", "secret-one", paper=False)
    assert a.fingerprint(KEY) == b.fingerprint(KEY)
    assert a.fingerprint(KEY) != live.fingerprint(KEY)
    assert a.fingerprint(KEY) != a.fingerprint(b"another-key")
    assert "PKSAME" not in a.fingerprint(KEY) and len(a.fingerprint(KEY)) == 24
