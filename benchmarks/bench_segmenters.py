"""Segmenter speed: the colour namer's ms per 224-px image, and the folder probe's item cost.

    .venv/bin/python benchmarks/bench_segmenters.py

Prints absolute times (the issue's target: colour namer ≤ 5 ms per 224-px image on this CPU)
and, for context, ratios to a plain resnet18 forward of one 224-px image. One thread each
(numpy's table lookup is single-threaded). Run on an idle machine.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

from segmenters.color import ColorNamer, lookup_table  # noqa: E402
from segmenters.folder import FolderProbe  # noqa: E402


def median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    torch.set_num_threads(1)
    t = time.perf_counter()
    lookup_table()
    build = time.perf_counter() - t
    namer = ColorNamer()
    photo = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((224, 224)), np.uint8)
    full = median_ms(lambda: namer.segment(photo[None], (224, 224)), 200)
    half = median_ms(lambda: namer.segment(photo[None], (112, 112)), 200)

    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        fwd = median_ms(lambda: model(x), 20)

    with tempfile.TemporaryDirectory() as d:
        folder = Path(d, "photos")
        folder.mkdir()
        for name in ["chelsea", "coffee", "astronaut", "rocket"]:
            for k in range(4):
                img = getattr(skimage.data, name)()
                Image.fromarray(np.roll(img, 17 * k, axis=1)).save(folder / f"{name}{k}.jpg")
        t = time.perf_counter()
        FolderProbe(folder, cache_dir=Path(d, "cache"), progress=False)
        first = (time.perf_counter() - t) / 16
        t = time.perf_counter()
        probe = FolderProbe(folder, cache_dir=Path(d, "cache"), progress=False)
        cached = (time.perf_counter() - t) / 16
        item = median_ms(lambda: probe[0], 50)

    print(f"colour namer lookup table: built once in {build:.2f} s (64^3 RGB bins)")
    print(f"colour namer, 224-px image, labels at 224 px: {full:.2f} ms/image "
          f"(target <= 5 ms; {full / fwd:.3f}x a resnet18 forward of one image, {fwd:.1f} ms)")
    print(f"colour namer, 224-px image, labels at 112 px (folder probe masks): {half:.2f} ms/image "
          f"({half / fwd:.3f}x resnet18)")
    print(f"folder probe (color), first open: {1000 * first:.1f} ms/image "
          f"(decode + resize + name + cache write); cached open: {1000 * cached:.2f} ms/image; "
          f"item: {item:.1f} ms ({item / fwd:.2f}x resnet18)")


if __name__ == "__main__":
    main()
