"""Image decoding: a per-call pixel limit (PIL's global guard untouched, memory bounded) and
16-bit / float images converted, not clipped."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from dissect.interventions.ablation import open_image
from dissect.errors import AblationError
from dissect.probes.images import to_rgb


def _png_header_bomb(path, w=14000, h=14000):
    """A ~100-byte PNG announcing w×h grey pixels (its IDAT holds a single row)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * w)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) +
                     chunk(b"IEND", b""))


MEASURE = """
import resource, sys
from PIL import Image
from dissect.interventions.ablation import open_image
from dissect.errors import AblationError
guard = Image.MAX_IMAGE_PIXELS
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    open_image(sys.argv[1])
    print("decoded")
except AblationError as e:
    print("refused:", e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("growth_kb", after - before)
print("guard_same", Image.MAX_IMAGE_PIXELS == guard)
"""


def test_header_bomb_refused_before_decoding_with_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_bomb(bomb)
    assert bomb.stat().st_size < 30_000
    p = subprocess.run([sys.executable, "-c", MEASURE, str(bomb)], capture_output=True,
                       text=True, timeout=120)
    out = p.stdout
    assert "refused: image 'bomb.png' is" in out and "limit" in out, (out, p.stderr)
    growth = int(out.split("growth_kb")[1].split()[0])
    assert growth < 50_000, f"opening a refused bomb grew the process by {growth} KB"
    assert "guard_same True" in out
    assert str(tmp_path) not in out          # no server path in the message


def test_limit_is_per_call(tmp_path):
    img = tmp_path / "mid.png"
    Image.new("RGB", (100, 100)).save(img)
    guard = Image.MAX_IMAGE_PIXELS
    with pytest.raises(AblationError, match="over the limit of 5,000"):
        open_image(str(img), max_pixels=5000)
    assert open_image(str(img)).size == (100, 100)
    assert Image.MAX_IMAGE_PIXELS == guard


def test_16bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)     # 0..65535
    p16 = tmp_path / "g16.png"
    Image.fromarray(ramp16).save(p16)
    rgb = np.asarray(open_image(str(p16)))
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_array_equal(rgb[..., 0].ravel(), np.arange(256))   # 255 levels, not clipped
    f = Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "F")
    g = np.asarray(to_rgb(f))[..., 0].ravel()
    assert g[0] == 0 and g[-1] == 255 and len(np.unique(g)) == 64
    big = Image.fromarray(np.linspace(-5, 5000, 64, dtype=np.float32).reshape(8, 8), "F")
    h = np.asarray(to_rgb(big))[..., 0].ravel()
    assert h[0] == 0 and h[-1] == 255 and np.all(np.diff(h.astype(int)) >= 0)


def test_lab_upload_has_its_own_smaller_pixel_limit(tmp_path):
    """An upload to the lab decodes only below studio.lab.UPLOAD_MAX_PIXELS (a 30-megapixel
    header is refused by name); a normal photo goes through."""
    import io
    from dissect.models.registry import load_model
    from studio.lab import UPLOAD_MAX_PIXELS, image_input
    lm = load_model("toyworld", "default")
    bomb = tmp_path / "huge.png"
    _png_header_bomb(bomb, 6000, 5000)
    assert 6000 * 5000 > UPLOAD_MAX_PIXELS
    with pytest.raises(AblationError, match="huge.png"):
        image_input(lm, {"kind": "upload"}, None, ("huge.png", bomb.read_bytes()))
    buf = io.BytesIO()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(buf, "PNG")
    x, name = image_input(lm, {"kind": "upload"}, None, ("ok.png", buf.getvalue()))
    assert name == "ok.png" and x.shape[0] == 3
