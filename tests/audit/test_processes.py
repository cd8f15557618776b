"""Whether the writer of a lifecycle's last record still runs: real processes of this host."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamwarden.audit.processes import (
    LocalProcesses,
    ProcessInfo,
    WriterStatus,
    check_writer,
)
from tests.waiting import wait_until

HOST = LocalProcesses().host()
NOW = datetime.now(UTC)
LINUX = Path("/proc/self/stat").exists()


def test_this_process_is_running():
    status = check_writer(HOST, os.getpid(), NOW)
    assert status == WriterStatus("running", HOST, os.getpid(), NOW)
    assert status.lifecycle_status == "live"
    assert status.describe().startswith(f"live: process {os.getpid()} on {HOST} is running")


def test_a_process_that_exited_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    status = check_writer(HOST, child.pid, NOW)
    assert (status.state, status.lifecycle_status) == ("gone", "unterminated")
    assert status.describe() == (f"unterminated: no final record, and process {child.pid} on "
                                 f"{HOST} is gone (last record {NOW:%Y-%m-%d %H:%M:%S.%f} UTC)")


@pytest.mark.skipif(not LINUX, reason="zombies are told apart through /proc")
def test_a_killed_process_not_yet_reaped_is_gone():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        child.kill()
        stat = Path(f"/proc/{child.pid}/stat")
        assert wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")
        assert LocalProcesses().lookup(child.pid) is None
        assert check_writer(HOST, child.pid, NOW).state == "gone"
    finally:
        child.wait(30)


@pytest.mark.skipif(not LINUX, reason="start times come from /proc")
def test_a_pid_reused_by_a_process_started_after_the_record_is_gone():
    started = LocalProcesses().lookup(os.getpid())
    assert started is not None and started.started_at is not None
    assert abs(started.started_at - NOW) < timedelta(minutes=30)  # this test run, not boot
    long_before = started.started_at - timedelta(hours=1)
    assert check_writer(HOST, os.getpid(), long_before).state == "gone"
    # Start times are exact to about a second: a record just before the start is not reuse.
    assert check_writer(HOST, os.getpid(), started.started_at - timedelta(seconds=1)
                        ).state == "running"


def test_without_proc_a_running_process_is_taken_as_the_writer(tmp_path):
    processes = LocalProcesses(proc=tmp_path)  # what a system without /proc looks like
    assert processes.lookup(os.getpid()) == ProcessInfo(started_at=None)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    assert check_writer(HOST, os.getpid(), long_ago, processes=processes).state == "running"


def test_an_unreadable_start_time_is_unknown(tmp_path):
    (tmp_path / str(os.getpid())).mkdir()
    (tmp_path / str(os.getpid()) / "stat").write_text("1 (a) S 1\n")  # too few fields
    assert LocalProcesses(proc=tmp_path).lookup(os.getpid()) == ProcessInfo(started_at=None)


@pytest.mark.parametrize("pid", [0, -1, 2**22, 2**40])
def test_impossible_pids_name_no_process(pid):
    # 0 and -1 would signal a process group or every process: never passed to kill.
    assert LocalProcesses().lookup(pid) is None
    assert check_writer(HOST, pid, NOW).state == "gone"


def test_another_host_cannot_be_checked_from_here():
    status = check_writer(f"not-{HOST}", os.getpid(), NOW)
    assert (status.state, status.lifecycle_status) == ("unchecked", "unchecked")
    assert status.describe().startswith(
        f"unchecked: no final record; process {os.getpid()} on host not-{HOST} cannot be "
        f"checked from here (last record ")


CHILD = """
import os, pwd
from datetime import UTC, datetime
from streamwarden.audit.processes import LocalProcesses, check_writer
if os.geteuid() == 0:
    os.setuid(pwd.getpwnam("nobody").pw_uid)
print(check_writer(LocalProcesses().host(), 1, datetime.now(UTC)).state)
"""


def test_a_process_of_another_user_is_seen_running():
    """kill(1, 0) by an unprivileged user fails with EPERM: process 1 exists all the same.
    The check runs in a child process that gives up root first, if it has it."""
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.stdout.strip() == "running", result.stderr
