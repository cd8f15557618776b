"""Settings: defaults, validation, environment."""

from __future__ import annotations

import math

import pytest

from streamwarden import InvalidInputError, Settings


def test_defaults_match_the_contract():
    settings = Settings()
    assert (settings.start_timeout, settings.stop_timeout, settings.drain_grace) == (10.0, 5.0, 0.0)
    assert settings.feed == "iex"
    assert (settings.audit_durability, settings.audit_failure_policy) == ("sync", "raise")
    assert (settings.reconnect_backoff_initial, settings.reconnect_backoff_max) == (1.0, 30.0)
    assert (settings.reconnect_grace, settings.connection_limit_grace) == (300.0, 120.0)


@pytest.mark.parametrize(("field", "value", "match"), [
    ("start_timeout", -1, "must be > 0"),
    ("start_timeout", 0, "must be > 0"),
    ("stop_timeout", math.nan, "finite"),
    ("stop_timeout", math.inf, "finite"),
    ("drain_grace", -0.5, "must be >= 0"),
    ("drain_grace", "1", "number of seconds"),
    ("start_timeout", True, "number of seconds"),
    ("feed", "nasdaq", "feed must be one of"),
    ("audit_durability", "eventual", "audit_durability"),
    ("audit_failure_policy", "ignore", "audit_failure_policy"),
    ("market_data_url", "http://x", "ws:// or wss://"),
    ("trading_api_url", "ws://x", "http:// or https://"),
    ("crypto_data_url", "http://x", "crypto_data_url must be a ws://"),
    ("option_data_url", "ftp://x", "option_data_url must be a ws://"),
    ("news_url", "x", "news_url must be a ws://"),
    ("fingerprint_key", "", "fingerprint_key"),
    ("debug", "yes", "debug must be a bool"),
    ("reconnect_backoff_initial", 0, "reconnect_backoff_initial must be > 0"),
    ("reconnect_backoff_max", math.inf, "reconnect_backoff_max must be a finite"),
    ("reconnect_backoff_max", 0.5, "reconnect_backoff_max must be >= reconnect_backoff_initial"),
    ("reconnect_grace", 0, "reconnect_grace must be > 0"),
    ("connection_limit_grace", -1, "connection_limit_grace must be > 0"),
])
def test_bad_settings_are_refused(field, value, match):
    with pytest.raises(InvalidInputError, match=match):
        Settings(**{field: value})


def test_from_env_with_overrides():
    env = {"STREAMWARDEN_START_TIMEOUT": "3", "STREAMWARDEN_FEED": "sip",
           "STREAMWARDEN_MARKET_DATA_URL": "ws://127.0.0.1:9000/v2/iex",
           "STREAMWARDEN_DEBUG": "true", "UNRELATED": "x"}
    settings = Settings.from_env(env, drain_grace=2.0)
    assert settings.start_timeout == 3.0 and settings.feed == "sip"
    assert settings.market_data_url == "ws://127.0.0.1:9000/v2/iex"
    assert settings.debug is True and settings.drain_grace == 2.0
    assert settings.replace(feed="iex").feed == "iex"


def test_crypto_option_and_news_urls_from_env():
    env = {"STREAMWARDEN_CRYPTO_DATA_URL": "ws://127.0.0.1:9000/v1beta3/crypto/us",
           "STREAMWARDEN_OPTION_DATA_URL": "ws://127.0.0.1:9000/v1beta1/opra",
           "STREAMWARDEN_NEWS_URL": "wss://example.com/v1beta1/news"}
    settings = Settings.from_env(env)
    assert settings.crypto_data_url == "ws://127.0.0.1:9000/v1beta3/crypto/us"
    assert settings.option_data_url == "ws://127.0.0.1:9000/v1beta1/opra"
    assert settings.news_url == "wss://example.com/v1beta1/news"
    assert Settings.from_env({}).news_url is None


@pytest.mark.parametrize(("env", "match"), [
    ({"STREAMWARDEN_STOP_TIMEOUT": "soon"}, "STREAMWARDEN_STOP_TIMEOUT"),
    ({"STREAMWARDEN_DEBUG": "perhaps"}, "STREAMWARDEN_DEBUG"),
    ({"STREAMWARDEN_STOP_TIMEOUT": "-2"}, "stop_timeout"),
])
def test_from_env_names_the_bad_variable(env, match):
    with pytest.raises(InvalidInputError, match=match):
        Settings.from_env(env)


def test_db_url_from_env_is_kept_out_of_repr():
    url = "postgresql+psycopg://audit:pw-CANARY@db.example/audit"
    settings = Settings.from_env({"STREAMWARDEN_DB_URL": url})
    assert settings.db_url == url and "pw-CANARY" not in repr(settings)
    assert Settings.from_env({"STREAMWARDEN_DB_URL": " "}).db_url is None
    assert Settings().db_url is None
    with pytest.raises(InvalidInputError, match="db_url"):
        Settings(db_url="")


def test_staleness_defaults_and_exempt_channels():
    settings = Settings()
    assert settings.stale_after == 120.0 and dict(settings.stale_after_channels) == {}
    assert [settings.stale_after_of(c) for c in ("quotes", "trades")] == [120.0, 120.0]
    for channel in ("bars", "daily_bars", "updated_bars", "statuses", "news", "trade_updates"):
        assert settings.stale_after_of(channel) == 0.0, channel
    tuned = Settings(stale_after=30, stale_after_channels={"bars": 180, "trades": 0})
    assert (tuned.stale_after_of("quotes"), tuned.stale_after_of("bars"),
            tuned.stale_after_of("trades")) == (30.0, 180.0, 0.0)
    assert Settings(stale_after=0).stale_after_of("quotes") == 0.0  # watchdog off
    with pytest.raises(TypeError):  # the overrides cannot be changed afterwards
        tuned.stale_after_channels["quotes"] = 1  # type: ignore[index]
    assert hash(tuned) == hash(tuned.replace())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stale_after": -1}, "stale_after must be >= 0"),
    ({"stale_after": math.inf}, "stale_after must be a finite"),
    ({"stale_after_channels": [("quotes", 1)]}, "mapping of channel to seconds"),
    ({"stale_after_channels": {"Quotes": 1}}, "'Quotes' is not a channel name"),
    ({"stale_after_channels": {"quotes": -5}}, r"stale_after_channels\['quotes'\] must be >= 0"),
    ({"stale_after_channels": {"quotes": "5"}}, "number of seconds"),
])
def test_bad_staleness_settings_are_refused(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        Settings(**kwargs)


def test_staleness_from_env_per_channel():
    env = {"STREAMWARDEN_STALE_AFTER": "45", "STREAMWARDEN_STALE_AFTER_QUOTES": "10",
           "STREAMWARDEN_STALE_AFTER_DAILY_BARS": "90000"}
    settings = Settings.from_env(env)
    assert settings.stale_after == 45.0
    assert dict(settings.stale_after_channels) == {"quotes": 10.0, "daily_bars": 90000.0}
    assert settings.stale_after_of("daily_bars") == 90000.0
    with pytest.raises(InvalidInputError, match="STREAMWARDEN_STALE_AFTER_TRADES must be a number"):
        Settings.from_env({"STREAMWARDEN_STALE_AFTER_TRADES": "often"})
    with pytest.raises(InvalidInputError, match="'bad-name' is not a channel name"):
        Settings.from_env({"STREAMWARDEN_STALE_AFTER_BAD-NAME": "1"})


def test_the_reconnect_settings_come_from_the_environment():
    env = {"STREAMWARDEN_RECONNECT_BACKOFF_INITIAL": "0.5",
           "STREAMWARDEN_RECONNECT_BACKOFF_MAX": "10",
           "STREAMWARDEN_RECONNECT_GRACE": "60", "STREAMWARDEN_CONNECTION_LIMIT_GRACE": "45"}
    settings = Settings.from_env(env)
    assert (settings.reconnect_backoff_initial, settings.reconnect_backoff_max,
            settings.reconnect_grace, settings.connection_limit_grace) == (0.5, 10.0, 60.0, 45.0)
    with pytest.raises(InvalidInputError, match="STREAMWARDEN_CONNECTION_LIMIT_GRACE"):
        Settings.from_env({"STREAMWARDEN_CONNECTION_LIMIT_GRACE": "two minutes"})
