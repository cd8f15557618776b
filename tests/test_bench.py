"""The benchmark scripts run and print one JSON document (tiny sizes: a smoke test, not a
measurement; the figures come from running them with their defaults)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@pytest.mark.parametrize(("script", "arguments", "key"), [
    ("lease_roundtrip.py", ["--quick"], "ratio_p50"),
    ("stream_throughput.py", ["--quick"], "throughput"),
    ("isolation_latency.py", ["--quick"], "ratio_p99"),
    ("kinds_throughput.py", ["--quick"], "results"),
    ("startup.py", ["--quick"], "results"),
    ("memory.py", ["--quick"], "per_idle_lease"),
    ("reconnect_resume.py", ["--quick"], "results"),
    ("relay_throughput.py", ["--quick"], "results"),
    ("audit_throughput.py", ["--rows", "300", "--sync-appends", "10", "--batched-appends", "50",
                             "--no-pg"], "results"),
], ids=["lease_roundtrip", "stream_throughput", "isolation_latency", "kinds_throughput",
        "startup", "memory", "reconnect_resume", "relay_throughput", "audit_throughput"])
def test_benchmark_prints_json(script, arguments, key):
    # The scripts import the package of this checkout, not whichever one is installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(BENCH / script), *arguments], capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert key in json.loads(done.stdout)
