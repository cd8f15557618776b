"""SIGINT as a request to stop: an event is set, however often, and nothing is raised."""

from __future__ import annotations

import os
import signal
import threading

from streamwarden._signals import signals_set


def test_sigint_sets_the_event_instead_of_raising_and_the_handler_comes_back():
    before = signal.getsignal(signal.SIGINT)
    stop = threading.Event()
    with signals_set(stop, signal.SIGINT):
        for _ in range(2):  # a second Ctrl-C is no different
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.wait(5.0)
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_it_leaves_the_handlers_alone():
    before = signal.getsignal(signal.SIGINT)
    seen: list[object] = []

    def inside() -> None:
        with signals_set(threading.Event(), signal.SIGINT):
            seen.append(signal.getsignal(signal.SIGINT))

    worker = threading.Thread(target=inside)
    worker.start()
    worker.join(5.0)
    assert seen == [before]
