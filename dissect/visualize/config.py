"""The hyperparameters of feature visualisation, in one dataclass.

    cfg = VisConfig(method="fourier", steps=256, size=128, seed=0)
    cfg = VisConfig.published("maco", steps=512)      # MaCo's own optimiser settings

Defaults follow the published recipes (research notes, section D):
- `fourier` (Lucid / Lucent `param.image(fft=True, decorrelate=True)` + `standard_transforms`,
  `render_vis`): spectrum sd 0.01, decay power 1, the "magic" 4.0, Adam lr 0.05;
- `maco` (Fel et al., NeurIPS 2023; horama 0.3.0 `maco`): phase-only optimisation under a fixed
  magnitude spectrum, NAdam lr 1.0, Gaussian + uniform input noise 0.05.
Both use Lucid's standard transforms: pad 12 (grey 0.5), jitter 8, scale 0.90-1.10, rotate
-10..10 degrees (plus five extra zeros), jitter 4.

Two departures, both because tests and users are offline and canvases are small: MaCo's
magnitude template is the 1/f amplitude spectrum of natural images (horama downloads an
ImageNet average), and MaCo uses the standard transforms instead of horama's six 20-25 % crops
of a 1280 px canvas (at 128 px such a crop is 26 px).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

METHODS = ("fourier", "maco")
MAX_SIZE = 2048        # beyond this one canvas alone fills gigabytes of activations
MIN_SIZE = 32          # the transforms pad 12 and jitter 8 + 4 px: smaller canvases are mostly border

# Lucid's colour_correlation_svd_sqrt (lucid/optvis/param/color.py), rows = RGB
COLOR_SVD_SQRT = ((0.26, 0.09, 0.02),
                  (0.27, 0.00, -0.05),
                  (0.27, -0.09, 0.03))


@dataclass(frozen=True)
class VisConfig:
    """Everything that shapes one visualisation; two equal configs draw the same images."""
    method: str = "fourier"            # fourier | maco
    steps: int = 256
    size: int = 128                    # canvas side (px); the model sees the transformed canvas
    seed: int = 0
    lr: float = 0.05                   # Adam (fourier, Lucid) | NAdam 1.0 (maco, horama)
    fft_sd: float = 0.01               # fourier: initial spectrum scale (Lucent)
    decay_power: float = 1.0           # fourier: 1/f^decay spectrum scaling (Lucent)
    magic: float = 4.0                 # fourier: Lucent divides the image by 4.0
    maco_decay: float = 1.0            # maco: magnitude template 1/f^decay
    noise: float = 0.0                 # Gaussian + uniform noise added after the transforms
    pad: int = 12
    jitter: tuple[int, int] = (8, 4)   # before and after scale/rotate
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[int, ...] = tuple(range(-10, 11)) + (0,) * 5
    cosine: bool = False               # directions: cosine with the direction (Lucent) not dot
    flat_tol: float = 1e-3             # gain below flat_tol x |objective| counts as "flat"

    @classmethod
    def published(cls, method: str = "fourier", **overrides) -> "VisConfig":
        """The published optimiser settings for `method`, then `overrides`."""
        base = cls(method=method)
        if method == "maco":
            base = replace(base, lr=1.0, noise=0.05)
        return replace(base, **overrides)
