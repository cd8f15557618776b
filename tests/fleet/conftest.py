"""Fleet test helpers: members in their own processes, whose ownership changes are read back."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


class Member:
    """A ``tests.fleet.member`` process and the events it printed so far."""

    def __init__(self, url: str, fingerprint: str, name: str, *, default_timing: bool = False
                 ) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet.member", url, fingerprint, name,
             f"ws://{name}.invalid:1", *(["default"] if default_timing else [])],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(json.loads(line))

    def wait_for(self, timeout: float, *, after: float = 0.0, **fields: Any) -> dict[str, Any]:
        """The first event stamped later than ``after`` (seen so far or arriving within
        ``timeout``) with ``fields``."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["t"] > after and all(event.get(name) == value
                                              for name, value in fields.items()):
                    return event
            try:
                self.events.append(self._lines.get(timeout=max(0.0, deadline
                                                               - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"{self.name}: no event {fields} within {timeout}s; "
                                     f"saw {self.events}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def members() -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for member in started:
        member.stop()


class StallingProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; while stalled it holds every byte back without
    closing anything: a network that silently stops delivering (the case TCP cannot report
    quickly), as opposed to :class:`tests.audit.tcp_proxy.TcpProxy`'s clean cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def close(self) -> None:
        """Close every forwarded connection (both ends see it at once) and the listener."""
        self._flowing.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target, timeout=5)
            upstream.settimeout(None)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)


def through(url: str, port: int) -> str:
    """``url`` (a PostgreSQL URL) pointed at 127.0.0.1:``port`` instead of its server."""
    import sqlalchemy as sa  # noqa: PLC0415

    parsed = sa.make_url(url)
    moved = url.replace(f"{parsed.host}:{parsed.port or 5432}", f"127.0.0.1:{port}", 1)
    assert moved != url
    return moved
