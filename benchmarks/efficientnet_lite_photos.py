"""Top-1 of the three EfficientNet-Lite presets on scikit-image's photos (offline, CPU).

    OMP_NUM_THREADS=1 python benchmarks/efficientnet_lite_photos.py

Prints each model's top-1 class (and its probability) on the five photos the studio's lab
offers (skimage.data: chelsea, coffee, astronaut, rocket, camera).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dissect.models.registry import load_model  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


def main() -> None:
    torch.set_num_threads(1)
    rows = {}
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        lm = load_model(name)
        cells = []
        for photo in PHOTOS:
            a = getattr(skimage.data, photo)()
            if a.ndim == 2:
                a = np.stack([a] * 3, -1)
            x = lm.prepare(Image.fromarray(a))
            with torch.no_grad():
                p = lm.model(lm.normalize(x[None])).softmax(1)[0]
            k = int(p.argmax())
            cells.append(f"{lm.class_names[k]} ({float(p[k]):.2f})")
        rows[name] = cells
        print(f"| {name} ({lm.input_size} px) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
