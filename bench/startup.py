"""Benchmark: start-up time of ``import streamwarden`` and ``streamwarden --version``.

Each command runs as a fresh subprocess ``--runs`` times, interleaved with the floor
``python -c pass`` (same interpreter); reported: the median wall time of each, and the extra
time over the floor's median, next to the goals (0.2 s for the import, 0.3 s for the command).
``streamwarden --help`` is measured too (it lists every subcommand without importing them).
Prints JSON.

    python bench/startup.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import streamwarden as sw

GOALS_EXTRA_S = {"import_streamwarden": 0.2, "streamwarden_version": 0.3}


def console_script() -> list[str]:
    """The installed ``streamwarden`` script next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "streamwarden"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("streamwarden")
    if found is None:
        raise SystemExit("the streamwarden console script is not installed")
    return [found]


def commands() -> dict[str, list[str]]:
    script = console_script()
    return {
        "python_pass": [sys.executable, "-c", "pass"],
        "import_streamwarden": [sys.executable, "-c", "import streamwarden"],
        "streamwarden_version": [*script, "--version"],
        "streamwarden_help": [*script, "--help"],
    }


def wall_time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(runs: int) -> dict[str, Any]:
    argvs = commands()
    samples: dict[str, list[float]] = {name: [] for name in argvs}
    for argv in argvs.values():  # warm-up: the file system cache and .pyc files
        wall_time(argv)
    for _ in range(runs):
        for name, argv in argvs.items():
            samples[name].append(wall_time(argv))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["python_pass"]
    results: dict[str, Any] = {}
    for name, values in samples.items():
        entry: dict[str, Any] = {"median_s": round(medians[name], 4),
                                 "min_s": round(min(values), 4),
                                 "max_s": round(max(values), 4)}
        if name != "python_pass":
            extra = medians[name] - floor
            entry["extra_over_floor_s"] = round(extra, 4)
            goal = GOALS_EXTRA_S.get(name)
            if goal is not None:
                entry["goal_extra_s"] = goal
                entry["meets_goal"] = extra < goal
        results[name] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each command")
    parser.add_argument("--quick", action="store_true", help="a smoke run (2 runs)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 2
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    results = run(args.runs)
    print(json.dumps({
        "benchmark": "startup",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "streamwarden": sw.__version__},
        "parameters": vars(args),
        "floor": "python_pass",
        "results": results,
        "note": "wall time of a fresh subprocess each run (median of the runs, interleaved); "
                "extra_over_floor_s = median - python_pass median.",
    }, indent=2))


if __name__ == "__main__":
    main()
