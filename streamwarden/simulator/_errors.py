"""The simulator's error, in a module of its own so that its control commands can raise it
without loading the server."""

from __future__ import annotations

from streamwarden.errors import StreamwardenError


class SimulatorError(StreamwardenError):
    """The simulator could not start, stop, or carry out a request in time; or, from another
    process, could not be reached or refused a control request."""
