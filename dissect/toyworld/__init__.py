"""ToyWorld: a procedurally generated probe world with known concepts, and its scene CNN.

    probe = toyworld_probe(1000, seed=0)          # built once, cached, read as Broden
    probe = open_probe("toyworld:1000", seed=3)   # the same through the probe dispatcher
    lm = load_model("toyworld", "default")        # the small scene classifier trained on it
    pairs = toyworld_probe(200, pair="sun")       # 200 scenes, each with and without the sun

Worlds are cached under `$DISSECT_CACHE/toyworld/seed<S>_n<N>/` (or
`<repo>/.cache/toyworld/...`), built in a temporary folder and renamed when complete, so an
interrupted build never leaves a half world behind.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_N = 1000
REPO = Path(__file__).resolve().parents[2]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where worlds are cached: `cache_dir`, else $DISSECT_CACHE/toyworld, else <repo>/.cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DISSECT_CACHE")
    return (Path(env).expanduser() if env else REPO / ".cache") / "toyworld"


def world_dir(n: int, seed: int = 0, cache_dir: str | os.PathLike | None = None,
              restyle=None, pair: str | None = None) -> Path:
    """The cache folder of world (seed, n); a restyled world (`restyle="sea:snow"`) has its own,
    and so has a paired one (`pair="sun"`)."""
    from dissect.toyworld.styles import parse_restyle
    r = parse_restyle(restyle)
    return cache_root(cache_dir) / (f"seed{int(seed)}_n{int(n)}"
                                    + (f"_restyle-{r.slug}" if r else "")
                                    + (f"_pair-{pair}" if pair else ""))


def check_pair(pair: str | None, restyle=None) -> str | None:
    """`pair` if it names a ToyWorld object (ProbeError naming the objects otherwise)."""
    from dissect.errors import ProbeError
    from dissect.toyworld.world import OBJECTS
    if pair is not None and pair not in OBJECTS:
        raise ProbeError(f"--pair {pair}: not a ToyWorld object; choose from {', '.join(OBJECTS)}")
    if pair is not None and restyle:
        raise ProbeError(f"--pair {pair} with --restyle {restyle}: use one of them at a time")
    return pair


def ensure_world(n: int, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                 workers: int = 2, progress: Callable[[int, int], None] | None = None,
                 restyle=None, pair: str | None = None) -> Path:
    """The folder of world (seed, n), building it (atomically) when not cached yet.

    `pair`: the paired world, each scene with and without that object (rows 2i and 2i+1)."""
    from dissect.toyworld.broden_writer import build_world
    check_pair(pair, restyle)
    d = world_dir(n, seed, cache_dir, restyle=restyle, pair=pair)
    if (d / "index.csv").is_file():
        return d
    if d.exists():          # not ours and not complete: a leftover; rebuild it
        shutil.rmtree(d, ignore_errors=True)
    try:
        build_world(d, n, seed=seed, workers=workers, progress=progress, restyle=restyle,
                    pair=pair)
    except OSError:
        if not (d / "index.csv").is_file():   # a concurrent build won the rename: fine
            raise
    return d


def toyworld_probe(n: int | None = None, seed: int | None = 0,
                   cache_dir: str | os.PathLike | None = None,
                   categories: Sequence[str] | str | None = None, split: str | None = None,
                   limit: int | None = None, progress: Callable[[int, int], None] | None = None,
                   restyle=None, pair: str | None = None, **_):
    """A BrodenProbe over ToyWorld `seed` with `n` images (default 1000), built when needed.

    `restyle="sea:snow"`: the same scenes with that concept drawn in another style
    (dissect.toyworld.styles; an unknown style raises StyleError listing them).
    `pair="sun"`: n scenes drawn with and without the sun, 2n images (`rows` has columns
    `pair` and `twin`).
    """
    from dissect.probes.broden import BrodenProbe
    from dissect.errors import ProbeError
    n = DEFAULT_N if n is None else int(n)
    if n < 1:
        raise ProbeError(f"toyworld:{n} needs a positive number of images, e.g. toyworld:500")
    from dissect.toyworld.styles import parse_restyle
    restyle = parse_restyle(restyle)
    d = ensure_world(n, 0 if seed is None else int(seed), cache_dir, progress=progress,
                     restyle=restyle, pair=pair)
    probe = BrodenProbe(d, categories=categories, split=split, limit=limit)
    probe.description = f"ToyWorld seed {seed}{f', {restyle}' if restyle else ''}: " \
                        f"{len(probe)} images" \
                        + (f", {n} scenes with and without {pair}" if pair else "") + f" ({d})"
    probe.restyle = restyle
    probe.pair = pair
    return probe


__all__ = ["toyworld_probe", "ensure_world", "world_dir", "cache_root", "check_pair", "DEFAULT_N"]
