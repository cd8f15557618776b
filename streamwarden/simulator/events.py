"""The simulator's log event names (structlog ``event`` values; details go in fields).

No event ever carries a key id or a secret.
"""

from __future__ import annotations

STARTED = "simulator.started"
STOPPED = "simulator.stopped"
STOP_FORCED = "simulator.stop_forced"
CONNECTION_OPENED = "simulator.connection_opened"
CONNECTION_CLOSED = "simulator.connection_closed"
AUTH = "simulator.auth"
FAULT_INJECTED = "simulator.fault_injected"
CONTROL_REFUSED = "simulator.control_refused"
SLOW_CLIENT = "simulator.slow_client"
