"""Whether the process that wrote a lifecycle's records is still running.

A lifecycle without a final (``stopped``) record is live only while its process runs: one that
died (``SIGKILL``, a crash, a power cut) never writes that record, and a reader would see the
connection "live" forever. :func:`check_writer` tells the two apart from the lifecycle's last
record (its ``host``, ``pid`` and time):

* ``running``: the record's host is this host and a process with that pid runs, started before
  the record was written (or its start time cannot be read, as on systems without ``/proc``);
* ``gone``: the host is this host and no process has that pid, it is a zombie, or the process
  that has it started after the record was written (the pid was reused);
* ``unchecked``: the record was written on another host; nothing here can tell.

The process table is injectable (:class:`ProcessTable`); :class:`LocalProcesses` reads this
host's (``os.kill(pid, 0)`` and, on Linux, ``/proc/<pid>/stat``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from streamwarden.audit.report import display_time

WriterState = Literal["running", "gone", "unchecked"]
#: Process start times from ``/proc`` are exact to the boot time's whole second: a process that
#: started less than this after a record may still be its writer.
START_TIME_SLACK = timedelta(seconds=2)
#: What each writer state makes of a lifecycle without a final record.
LIFECYCLE_STATUS: dict[WriterState, str] = {
    "running": "live", "gone": "unterminated", "unchecked": "unchecked"}
_MAX_PID = 2**22  # Linux's pid_max ceiling; anything above names no process


@dataclass(frozen=True)
class ProcessInfo:
    """A running process: when it started, if the system says (None otherwise)."""

    started_at: datetime | None


class ProcessTable(Protocol):
    """This host's processes, as :func:`check_writer` needs them."""

    def host(self) -> str:
        """This host's name, as audit records carry it (``socket.gethostname()``)."""
        ...

    def lookup(self, pid: int) -> ProcessInfo | None:
        """The running process with ``pid``, or None if there is none (or only a zombie)."""
        ...


class LocalProcesses:
    """This host's process table: ``os.kill(pid, 0)``, and start times and zombie states
    from ``proc`` (``/proc``; elsewhere start times are unknown). Thread-safe: stateless."""

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc

    def host(self) -> str:
        """``socket.gethostname()``."""
        return socket.gethostname()

    def lookup(self, pid: int) -> ProcessInfo | None:
        """The process with ``pid``, None if none runs (a zombie counts as none)."""
        if not 0 < pid < _MAX_PID:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # it exists, under another user
        fields = self._stat(pid)
        if fields is None:
            return ProcessInfo(started_at=None)
        if fields[0] == "Z":
            return None
        return ProcessInfo(started_at=self._started_at(fields))

    def _stat(self, pid: int) -> list[str] | None:
        """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
        try:
            text = (self._proc / str(pid) / "stat").read_text(encoding="utf-8",
                                                              errors="replace")
        except OSError:
            return None
        # The command name, in parentheses, may itself hold spaces and parentheses.
        return text[text.rfind(")") + 2:].split()

    def _started_at(self, fields: list[str]) -> datetime | None:
        try:
            ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
            boot = next(int(line.split()[1]) for line in
                        (self._proc / "stat").read_text(encoding="utf-8").splitlines()
                        if line.startswith("btime "))
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)


@dataclass(frozen=True)
class WriterStatus:
    """What became of the process that wrote a lifecycle's last record. Immutable.

    Attributes:
        state: ``running``, ``gone`` or ``unchecked`` (see the module).
        host, pid, last_record_at: the last record's.
    """

    state: WriterState
    host: str
    pid: int
    last_record_at: datetime

    @property
    def lifecycle_status(self) -> str:
        """The lifecycle's status, it having no final record: ``live``, ``unterminated``
        (its process is gone) or ``unchecked`` (written on another host)."""
        return LIFECYCLE_STATUS[self.state]

    def describe(self) -> str:
        """One line for a reader: the status, the process and the last record's time (UTC)."""
        last = f"last record {display_time(self.last_record_at)} UTC"
        if self.state == "running":
            return f"live: process {self.pid} on {self.host} is running ({last})"
        if self.state == "gone":
            return (f"unterminated: no final record, and process {self.pid} on {self.host} "
                    f"is gone ({last})")
        return (f"unchecked: no final record; process {self.pid} on host {self.host} cannot "
                f"be checked from here ({last})")


def check_writer(host: str, pid: int, last_record_at: datetime, *,
                 processes: ProcessTable | None = None) -> WriterStatus:
    """Whether the process ``pid`` on ``host``, which wrote a record at ``last_record_at``,
    still runs (see the module for the rules).

    Args:
        processes: the process table (default: this host's, :class:`LocalProcesses`).

    Thread-safety: safe from any thread.
    """
    table = LocalProcesses() if processes is None else processes
    if host != table.host():
        state: WriterState = "unchecked"
    else:
        found = table.lookup(pid)
        reused = (found is not None and found.started_at is not None
                  and found.started_at > last_record_at + START_TIME_SLACK)
        state = "gone" if found is None or reused else "running"
    return WriterStatus(state=state, host=host, pid=pid, last_record_at=last_record_at)
