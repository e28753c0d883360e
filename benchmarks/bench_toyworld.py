"""ToyWorld generator speed: images/s on one core at 224 px, and Broden writing speed.

    python benchmarks/bench_toyworld.py [--images 400]

1. render: images/s of one process (wall and CPU time), 224 px with all label maps.  goal >= 200
2. fast path: render + pool to 112 (training arrays), images/s on one core.
3. Broden folder: images/s writing PNG images + 4 mask planes (one process).
CPU-time rates are the honest figure on a shared machine; wall rates match on an idle one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dissect.toyworld.broden_writer import build_world  # noqa: E402
from dissect.toyworld.generate import render, render_batch  # noqa: E402


def _rate(fn, n: int) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return n / (time.perf_counter() - w), n / max(1e-9, time.process_time() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    n = ap.parse_args().images
    render(0, 0)
    wall, cpu = _rate(lambda: [render(1, i) for i in range(n)], n)
    print(f"render 224 px       {wall:7.0f} images/s wall  {cpu:7.0f} images/s CPU  "
          f"(goal >= 200) {'OK' if max(wall, cpu) >= 200 else 'SLOW'}")
    wall, cpu = _rate(lambda: render_batch(2, 0, n), n)
    print(f"training fast path  {wall:7.0f} images/s wall  {cpu:7.0f} images/s CPU")
    d = tempfile.mkdtemp()
    try:
        m = max(50, n // 4)
        wall, cpu = _rate(lambda: build_world(os.path.join(d, "w"), m, seed=3, workers=1), m)
        print(f"Broden folder       {wall:7.0f} images/s wall  {cpu:7.0f} images/s CPU")
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
