"""Fleet test helpers: members in their own processes, whose ownership changes are read back."""

from __future__ import annotations

import json
import os
import queue
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

    def __init__(self, url: str, fingerprint: str, name: str) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fleet.member", url, fingerprint, name,
             f"ws://{name}.invalid:1"],
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
