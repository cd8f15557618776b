"""Helpers for your own test suites (structlog's ``testing`` module is the model).

* :class:`InMemoryTransport` / :class:`InMemoryTransportFactory`: a manager without a network;
  the test produces connection events and messages with ``emit_*``.
* :class:`InMemoryAuditSink`: the hash-chained in-memory audit sink (``records()``).
* :class:`ShiftedClock`: a clock set to a chosen wall time (a Saturday, a session's opening)
  that runs at real speed and jumps forward with ``advance(seconds)``.
* :class:`ManagerMachine`: the hypothesis ``RuleBasedStateMachine`` that drives a real
  :class:`~streamwarden.ConnectionManager` through random histories and checks the spec's
  invariants and the audit trail's conformance after every step; run it with
  :func:`run_properties`, or subclass it (``manager_machine(spec)``) in your suite. It needs
  hypothesis (``pip install 'streamwarden[check]'``) and is imported only when used.

Example::

    from streamwarden import ConnectionManager, Credentials
    from streamwarden.testing import InMemoryAuditSink, InMemoryTransportFactory

    factory, sink = InMemoryTransportFactory(), InMemoryAuditSink()
    with ConnectionManager(transport_factory=factory, audit=sink) as manager:
        with manager.market_data(Credentials("PKTEST", "secret"), symbols=["AAPL"]):
            ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamwarden.audit.memory import InMemoryAuditSink
from streamwarden.testing._clock import ShiftedClock
from streamwarden.testing._transport import (
    InMemoryTransport,
    InMemoryTransportFactory,
    TransportOptions,
)

if TYPE_CHECKING:
    from streamwarden.testing._stateful import (
        ManagerMachine,
        PropertyResult,
        manager_machine,
        run_properties,
    )

__all__ = [
    "InMemoryAuditSink",
    "InMemoryTransport",
    "InMemoryTransportFactory",
    "ManagerMachine",
    "PropertyResult",
    "ShiftedClock",
    "TransportOptions",
    "manager_machine",
    "run_properties",
]

_HYPOTHESIS_NAMES = frozenset({"ManagerMachine", "PropertyResult", "manager_machine",
                               "run_properties"})


def __getattr__(name: str) -> Any:
    if name in _HYPOTHESIS_NAMES:
        return getattr(importlib.import_module("streamwarden.testing._stateful"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
