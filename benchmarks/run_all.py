"""Run every benchmarks/bench_*.py in turn, each as its own subprocess, and print its output.

    python benchmarks/run_all.py            # `make bench`; run it on an otherwise idle machine

Every benchmarks/bench_*.py is picked up (e.g. bench_visualize.py: feature visualisation / its
floor of 256 forward+backward passes).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        print(f"== {script.name}: exit {rc}, {time.perf_counter() - t:.0f}s\n", flush=True)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
