"""Scripted faults of the simulator: what goes wrong, and the ``--fault`` text that asks for it.

A :class:`Faults` value is immutable; the simulator reads the current one at the moment each
protocol step happens, so replacing it at run time (``Simulator.set_faults``) affects the next
step of every open connection as well as new connections.

Which stream each fault applies to:

============================  ===============================  ===============================
fault                         market data (``/v2/<feed>``)     trade updates (``/stream``)
============================  ===============================  ===============================
``auth_failure``              error 402 ``auth failed``        ``authorization`` unauthorized
``connection_limit``          406 after every auth, then close  not applicable (no such error)
``symbol_limit``              error 405 in reply to subscribe  not applicable
``insufficient_subscription`` error 409 in reply to subscribe  not applicable
``drop_after=N``              abort after N data messages      abort after N trade updates
``drop_once=N``               as drop_after, first drop only   as drop_after, first drop only
``hang_on_close``             client's close never answered    client's close never answered
``slow_start=S``              S seconds before ``connected``   S seconds before the auth reply
``mute``                      no data (quotes, trades, bars)   no trade updates
``insufficient_scope``        error 411 after auth             not applicable
============================  ===============================  ===============================

``mute`` is the connected-but-silent socket of alpaca-py issue 740: connections stay open,
pings are answered, auth, subscription and error replies are still sent, but every data message
published while it is on is dropped for every connection (not held back: nothing arrives after
``unmute`` but what is published afterwards). ``Simulator.mute()`` / ``unmute()``, the control
actions ``/control/mute`` / ``/control/unmute`` and ``streamwarden simulator mute|unmute`` switch
it at run time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

FLAG_FAULTS = (
    "auth_failure",
    "connection_limit",
    "symbol_limit",
    "insufficient_subscription",
    "hang_on_close",
    "mute",
    "insufficient_scope",
)
"""Faults named alone on the command line (``--fault auth_failure``)."""

VALUE_FAULTS = ("drop_after", "drop_once", "slow_start")
"""Faults that take a value (``--fault drop_after=3``, ``--fault slow_start=0.5``)."""

FAULT_SYNTAX = (
    "auth_failure|connection_limit|symbol_limit|insufficient_subscription|hang_on_close|mute|"
    "drop_after=N|drop_once=N|slow_start=SECONDS|insufficient_scope"
)


@dataclass(frozen=True)
class Faults:
    """The faults a simulator injects. The default injects none.

    Attributes:
        auth_failure: refuse every authentication, whatever the credentials.
        connection_limit: answer every valid market-data auth with error 406, then close (a
            second socket of one account on one endpoint gets 406 without this fault).
        symbol_limit: answer every market-data subscribe with error 405.
        insufficient_subscription: answer every market-data subscribe with error 409.
        drop_after: abort the TCP connection (no close frame) right after it has been sent
            this many data messages (quotes, trades, bars, trade updates).
        drop_once: with ``drop_after``, drop only the first connection that reaches the count
            (the client's reconnection then stays up). Re-armed by ``Simulator.set_faults``.
        hang_on_close: never answer a client's close frame: the server stops reading that
            socket and keeps it open until the simulator stops.
        slow_start: seconds to wait before the market-data ``connected`` greeting and before
            the trading stream's authorization reply.
        mute: send no data message (dropped, not held back) while sockets stay open and
            every control reply is still sent.
        insufficient_scope: answer a valid market-data auth with error 411 (credentials
            without the data scope); the connection stays open, unauthenticated.

    Raises (on construction):
        ValueError: ``drop_after`` below 1, ``drop_once`` without ``drop_after``, or
            ``slow_start`` negative or not finite.

    Thread-safety: immutable; share freely.
    """

    auth_failure: bool = False
    connection_limit: bool = False
    symbol_limit: bool = False
    insufficient_subscription: bool = False
    drop_after: int | None = None
    drop_once: bool = False
    hang_on_close: bool = False
    slow_start: float = 0.0
    mute: bool = False
    insufficient_scope: bool = False

    def __post_init__(self) -> None:
        if self.drop_after is not None and (
            isinstance(self.drop_after, bool) or self.drop_after < 1
        ):
            raise ValueError(f"drop_after must be a whole number >= 1, got {self.drop_after!r}")
        if self.drop_once and self.drop_after is None:
            raise ValueError("drop_once needs drop_after")
        if not math.isfinite(self.slow_start) or self.slow_start < 0:
            raise ValueError(f"slow_start must be >= 0 seconds, got {self.slow_start!r}")

    @property
    def active(self) -> tuple[str, ...]:
        """The faults in force, in ``--fault`` syntax (``("auth_failure", "drop_after=3")``)."""
        names = [name for name in FLAG_FAULTS if getattr(self, name)]
        if self.drop_after is not None:
            names.append(f"{'drop_once' if self.drop_once else 'drop_after'}={self.drop_after}")
        if self.slow_start:
            names.append(f"slow_start={self.slow_start:g}")
        return tuple(names)

    def describe(self) -> str:
        """The active faults joined by commas, or ``"none"``."""
        return ", ".join(self.active) or "none"

    def with_spec(self, spec: str) -> Faults:
        """A copy with one more fault, given in ``--fault`` syntax.

        Raises:
            ValueError: an unknown fault name, a missing or malformed value, a value on a flag
                fault, or a fault given twice; the message is one line naming the problem.
        """
        name, has_value, text = spec.strip().partition("=")
        name = name.strip().replace("-", "_")
        if name in FLAG_FAULTS:
            if has_value:
                raise ValueError(f"fault {name} takes no value")
            if getattr(self, name):
                raise ValueError(f"fault {name} given twice")
            return replace(self, **{name: True})
        if name not in VALUE_FAULTS:
            raise ValueError(f"unknown fault {spec!r}; expected one of {FAULT_SYNTAX}")
        if not has_value or not text.strip():
            raise ValueError(f"fault {name} needs a value ({name}=...)")
        if name == "slow_start":
            if self.slow_start:
                raise ValueError("fault slow_start given twice")
            return replace(self, slow_start=_seconds(text))
        if self.drop_after is not None:
            raise ValueError("faults drop_after/drop_once given twice")
        return replace(self, drop_after=_count(name, text), drop_once=name == "drop_once")

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Faults:
        """The faults named by ``specs`` (``["auth_failure", "drop_after=3"]``).

        Raises:
            ValueError: as :meth:`with_spec`.
        """
        faults = cls()
        for spec in specs:
            faults = faults.with_spec(spec)
        return faults


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"slow_start needs seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"slow_start must be >= 0 seconds, got {text!r}")
    return value


def _count(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} needs a whole number, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value
