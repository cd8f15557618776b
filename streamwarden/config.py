"""Settings: timeouts, feed, endpoint overrides and audit policy, from code or environment.

Every field can be set from the environment with the prefix ``STREAMWARDEN_`` (for example
``STREAMWARDEN_START_TIMEOUT=3``); :meth:`Settings.from_env` reads them, explicit keyword
arguments win over the environment.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal

from streamwarden.errors import InvalidInputError
from streamwarden.validation import check_seconds

Feed = Literal["iex", "sip", "delayed_sip", "otc", "boats", "overnight"]
Durability = Literal["sync", "batched"]
FailurePolicy = Literal["raise", "spool"]

FEEDS: tuple[str, ...] = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")
DURABILITIES: tuple[str, ...] = ("sync", "batched")
FAILURE_POLICIES: tuple[str, ...] = ("raise", "spool")
ENV_PREFIX = "STREAMWARDEN_"
#: Documented default key for account fingerprints. Set STREAMWARDEN_FINGERPRINT_KEY to a private
#: value so that fingerprints cannot be linked to key ids by someone who knows the ids.
DEFAULT_FINGERPRINT_KEY = "streamwarden-fingerprint-v1"
#: Channels that are legitimately sparse, never restarted for silence unless
#: ``stale_after_channels`` names them: bars (one a minute per symbol, none for a symbol that
#: does not trade), daily and updated bars, trading statuses, news, and trade updates (an
#: account without orders is silent for days).
STALE_EXEMPT_CHANNELS = frozenset({"bars", "daily_bars", "updated_bars", "statuses", "news",
                                   "trade_updates"})
#: The prefix of the per-channel staleness variables (``STREAMWARDEN_STALE_AFTER_QUOTES=30``).
STALE_AFTER_ENV_PREFIX = ENV_PREFIX + "STALE_AFTER_"
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    assert isinstance(value, str)
    return value


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1; got {value!r}")
    return value


def _check_url(name: str, value: object,
               schemes: tuple[str, ...] = ("ws://", "wss://")) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(schemes):
        raise InvalidInputError(f"{name} must be a {' or '.join(schemes)} URL")
    return value


@dataclass(frozen=True)
class Settings:
    """Run-time settings of a :class:`~streamwarden.ConnectionManager`.

    Attributes:
        start_timeout: seconds an acquire waits for ``connected`` before StartTimeoutError.
        stop_timeout: seconds a stop may take before the transport thread is abandoned.
        drain_grace: seconds a connection stays open after its last release for reuse.
        feed: Alpaca market-data feed.
        market_data_url / trade_updates_url / crypto_data_url / option_data_url / news_url:
            endpoint overrides (the simulator's, in tests): ``STREAMWARDEN_MARKET_DATA_URL``,
            ``..._TRADE_UPDATES_URL``, ``..._CRYPTO_DATA_URL``, ``..._OPTION_DATA_URL``,
            ``..._NEWS_URL``. An option-data override serves both option feeds: when its last
            path segment names one (``.../v1beta1/indicative``), it becomes the lease's feed.
        trading_api_url: the trading REST address (``http(s)://``) whose trade events API
            (``/v2/events/trades``) replays the trade updates a reconnect missed; None means
            Alpaca's, paper or live as the credentials say.
        audit_durability: ``sync`` (committed before the call returns) or ``batched``.
        audit_failure_policy: ``raise`` or ``spool`` when the audit database is unreachable.
        db_url: audit database URL for :meth:`AuditLog.open` (``STREAMWARDEN_DB_URL``); None
            means the default SQLite file. Left out of ``repr`` (it may hold a password).
        fingerprint_key: HMAC key of account fingerprints.
        lease_queue_size: messages a lease's delivery queue holds per channel before its
            overflow policy applies (quotes conflate, trades and bars drop the oldest, trade
            updates revoke the lease).
        conflate_quotes: whether a lease's queued quotes conflate per symbol (default); off,
            quotes queue like trades (the oldest dropped beyond ``lease_queue_size``, counted):
            for a consumer that must see every quote or know it lost one (the relay).
        callback_workers: threads that run lease callbacks (at most one call per lease at a
            time); a callback that never returns holds one of them.
        checkpoint_dir / checkpoint_key: where :class:`AuditLog` writes signed checkpoints and
            the private key file it signs them with (both, or neither: no checkpoints).
        checkpoint_every: a checkpoint after this many committed records.
        checkpoint_interval: seconds between checkpoints at the latest (a heartbeat when
            nothing was appended).
        debug: check the spec's invariants after every transition (slower).
        stale_after: seconds without a message on a channel the wire carries, while the
            market of the stream's kind is open (:mod:`streamwarden.sessions`), after which the
            socket counts as mute and is closed and reconnected (the spec event
            ``went_stale``); 0 turns the watchdog off. The default, 120 s, is twice the single
            60 s data timeout alpaca-py's own fix was criticised for: a busy quotes or trades
            channel is silent for seconds at most during a session, so two minutes of silence
            means a mute socket, at the cost of at most two minutes of lost data.
        stale_after_channels: per-channel overrides of ``stale_after`` (``{"trades": 300}``);
            0 never counts that channel as stale, and a channel exempt by default
            (:data:`STALE_EXEMPT_CHANNELS`) is watched only when named here. From the
            environment: ``STREAMWARDEN_STALE_AFTER_<CHANNEL>`` (``..._QUOTES=30``,
            ``..._DAILY_BARS=90000``), the channel name in capitals. Only streams whose kind
            has a market session are watched (stock and crypto market data): trade updates
            never are, whatever these settings say.
        reconnect_backoff_initial / reconnect_backoff_max: seconds of the jittered exponential
            backoff between connection attempts: attempt n waits a random time in
            ``[c/2, c]`` with ``c = min(max, initial * 2**(n-1))``; an HTTP 429 waits the
            answer's ``Retry-After``, else ``reconnect_backoff_max``.
        reconnect_grace: seconds a reconnect after a drop may take, whatever the cause, before
            the lifecycle fails and its leases are revoked (first starts keep
            ``start_timeout``).
        connection_limit_grace: seconds, from the drop, during which Alpaca's 406 (connection
            limit exceeded) on a reconnect is transient; a 406 past it fails the lifecycle
            with ConnectionLimitError.

    Raises:
        InvalidInputError: on any out-of-range or ill-typed value; the object is not created.

    Thread-safety: immutable.
    """

    start_timeout: float = 10.0
    stop_timeout: float = 5.0
    drain_grace: float = 0.0
    feed: Feed = "iex"
    market_data_url: str | None = None
    trade_updates_url: str | None = None
    crypto_data_url: str | None = None
    option_data_url: str | None = None
    news_url: str | None = None
    trading_api_url: str | None = None
    audit_durability: Durability = "sync"
    audit_failure_policy: FailurePolicy = "raise"
    db_url: str | None = field(default=None, repr=False)
    fingerprint_key: str = DEFAULT_FINGERPRINT_KEY
    lease_queue_size: int = 10_000
    callback_workers: int = 4
    debug: bool = False
    checkpoint_dir: str | None = None
    checkpoint_key: str | None = None
    checkpoint_every: int = 1000
    checkpoint_interval: float = 300.0
    stale_after: float = 120.0
    stale_after_channels: Mapping[str, float] = field(default_factory=dict, hash=False)
    reconnect_backoff_initial: float = 1.0
    reconnect_backoff_max: float = 30.0
    reconnect_grace: float = 300.0
    connection_limit_grace: float = 120.0
    conflate_quotes: bool = True

    def __post_init__(self) -> None:
        check_seconds("start_timeout", self.start_timeout, allow_zero=False)
        check_seconds("stop_timeout", self.stop_timeout, allow_zero=False)
        check_seconds("drain_grace", self.drain_grace, allow_zero=True)
        _check_choice("feed", self.feed, FEEDS)
        _check_choice("audit_durability", self.audit_durability, DURABILITIES)
        _check_choice("audit_failure_policy", self.audit_failure_policy, FAILURE_POLICIES)
        _check_url("market_data_url", self.market_data_url)
        _check_url("trade_updates_url", self.trade_updates_url)
        _check_url("crypto_data_url", self.crypto_data_url)
        _check_url("option_data_url", self.option_data_url)
        _check_url("news_url", self.news_url)
        _check_url("trading_api_url", self.trading_api_url, schemes=("http://", "https://"))
        if self.db_url is not None and (not isinstance(self.db_url, str) or not self.db_url):
            raise InvalidInputError("db_url must be a non-empty string or None")
        if not isinstance(self.fingerprint_key, str) or not self.fingerprint_key:
            raise InvalidInputError("fingerprint_key must be a non-empty string")
        _check_count("lease_queue_size", self.lease_queue_size)
        _check_count("callback_workers", self.callback_workers)
        if not isinstance(self.debug, bool):
            raise InvalidInputError("debug must be a bool")
        if not isinstance(self.conflate_quotes, bool):
            raise InvalidInputError("conflate_quotes must be a bool")
        for name in ("checkpoint_dir", "checkpoint_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInputError(f"{name} must be a non-empty path or None")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidInputError("checkpoint_every must be a whole number >= 1")
        check_seconds("checkpoint_interval", self.checkpoint_interval, allow_zero=False)
        check_seconds("stale_after", self.stale_after, allow_zero=True)
        object.__setattr__(self, "stale_after_channels",
                           _check_stale_channels(self.stale_after_channels))
        self._check_reconnect()

    def stale_after_of(self, channel: str) -> float:
        """Seconds of silence after which ``channel`` is stale; 0.0: never.

        >>> Settings(stale_after_channels={"trades": 300}).stale_after_of("trades")
        300.0
        >>> Settings().stale_after_of("bars"), Settings().stale_after_of("quotes")
        (0.0, 120.0)
        """
        override = self.stale_after_channels.get(channel)
        if override is not None:
            return override
        return 0.0 if channel in STALE_EXEMPT_CHANNELS else self.stale_after

    def _check_reconnect(self) -> None:
        check_seconds("reconnect_backoff_initial", self.reconnect_backoff_initial,
                      allow_zero=False)
        check_seconds("reconnect_backoff_max", self.reconnect_backoff_max, allow_zero=False)
        if self.reconnect_backoff_max < self.reconnect_backoff_initial:
            raise InvalidInputError("reconnect_backoff_max must be >= reconnect_backoff_initial")
        check_seconds("reconnect_grace", self.reconnect_grace, allow_zero=False)
        check_seconds("connection_limit_grace", self.connection_limit_grace, allow_zero=False)

    @property
    def fingerprint_key_bytes(self) -> bytes:
        """The fingerprint key as bytes, for :meth:`Credentials.fingerprint`."""
        return self.fingerprint_key.encode()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``STREAMWARDEN_*`` variables, then ``overrides``.

        Raises:
            InvalidInputError: naming the variable whose value is malformed.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            text = env.get(ENV_PREFIX + spec.name.upper())
            if text is not None and spec.name != "stale_after_channels":
                values[spec.name] = _parse_env_value(spec.name, text, default=spec.default)
        channels = _stale_channels_from_env(env)
        if channels:
            values["stale_after_channels"] = channels
        return replace(cls(), **{**values, **overrides})

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (validated like the constructor)."""
        return replace(self, **changes)


def _parse_env_value(name: str, text: str, *, default: object) -> object:
    variable = ENV_PREFIX + name.upper()
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in _TRUE | _FALSE:
            raise InvalidInputError(f"{variable} must be true or false")
        return lowered in _TRUE
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise InvalidInputError(f"{variable} must be a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise InvalidInputError(f"{variable} must be a number of seconds") from None
    return text.strip() or None if default is None else text.strip()


def _check_stale_channels(value: object) -> Mapping[str, float]:
    if not isinstance(value, Mapping):
        raise InvalidInputError("stale_after_channels must be a mapping of channel to seconds")
    checked: dict[str, float] = {}
    for channel, seconds in value.items():
        if not isinstance(channel, str) or not _CHANNEL_NAME.match(channel):
            raise InvalidInputError(f"stale_after_channels: {channel!r} is not a channel name "
                                    "(lower-case letters, digits and _)")
        checked[channel] = check_seconds(f"stale_after_channels[{channel!r}]", seconds)
    return MappingProxyType(checked)


def _stale_channels_from_env(env: Mapping[str, str]) -> dict[str, float]:
    """The ``STREAMWARDEN_STALE_AFTER_<CHANNEL>`` variables, by channel name."""
    channels: dict[str, float] = {}
    for name, text in env.items():
        if not name.startswith(STALE_AFTER_ENV_PREFIX):
            continue
        channel = name[len(STALE_AFTER_ENV_PREFIX):].lower()
        try:
            channels[channel] = float(text)
        except ValueError:
            raise InvalidInputError(f"{name} must be a number of seconds") from None
    return channels
