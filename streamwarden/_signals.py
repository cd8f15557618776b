"""Signals as a request to stop, for commands that must wind down cleanly rather than unwind.

A KeyboardInterrupt can land anywhere, in a manager's ``close`` or an audit write included;
a command that must finish its shutdown (release leases, write the final records) turns
SIGINT into an event it checks at points of its choosing instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: Exit status of a command interrupted by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 128 + signal.SIGINT


@contextmanager
def signals_set(event: threading.Event, *signals: signal.Signals) -> Iterator[None]:
    """While inside, each of ``signals`` sets ``event`` (however often it comes) instead of its
    usual effect; the previous handlers are restored on the way out.

    Only the main thread can handle signals: elsewhere this does nothing, and the signals keep
    their usual effect.

    Thread-safety: use from the main thread; ``event`` may be read from any thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        event.set()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
