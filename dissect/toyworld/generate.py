"""Render ToyWorld images with their labels, deterministically by (seed, index).

    s = render(seed=0, index=7)             # Sample: rgb 224×224×3 uint8, label maps, scene
    x, y = render_batch(seed=0, start=0, count=1000, size=112)   # training fast path
    x, y = render_parallel(seed=0, count=48000, workers=2)       # same arrays, 2 processes
    with_sun, without = render_pair(seed=0, index=7, obj="sun")   # the same scene ± one object

Image i of world `seed` depends only on (seed, i): worlds can be built in any order or split
over processes. A scene's defining objects all show (each at least 35% visible); in 60% of
images every object but one of another scene appears too (a near miss), plus up to 2
distractors that complete no other scene. Background colour and texture ignore the scene.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dissect.toyworld.canvas import COLOR_NAMES, Canvas
from dissect.toyworld.objects import BACKDROP, PAINTERS
from dissect.toyworld.world import OBJECTS, SCENE_NAMES, SCENES, TEXTURES

NEAR_MISS_P = 0.6
MAX_DISTRACTORS = 2
MIN_VISIBLE = 0.35
CLUTTER_COLORS = COLOR_NAMES
_SETS = [frozenset(SCENES[s]) for s in SCENE_NAMES]
_OIDX = {o: i + 1 for i, o in enumerate(OBJECTS)}


@dataclass
class Sample:
    rgb: np.ndarray       # H×W×3 uint8
    color: np.ndarray     # H×W uint8, 1-based index into world.COLORS (0 = none)
    obj: np.ndarray       # H×W uint8, 1-based index into world.OBJECTS
    part: np.ndarray      # H×W uint8, 1-based index into world.PARTS
    tex: np.ndarray       # H×W uint8, 1-based index into world.TEXTURES
    scene: int            # index into world.SCENE_NAMES
    objects: tuple[str, ...]


def _complete(objs: set[str]) -> list[int]:
    return [i for i, s in enumerate(_SETS) if s <= objs]


def choose_objects(rng: np.random.Generator, scene: int) -> set[str]:
    """The scene's objects, maybe a near miss of another scene, and up to 2 distractors."""
    while True:
        objs = set(SCENES[SCENE_NAMES[scene]])
        if rng.random() < NEAR_MISS_P:
            other = SCENE_NAMES[int(rng.choice([i for i in range(len(SCENE_NAMES))
                                                if i != scene]))]
            miss = list(SCENES[other])
            miss.pop(int(rng.integers(len(miss))))
            objs |= set(miss)
        for _ in range(int(rng.integers(0, MAX_DISTRACTORS + 1))):
            objs.add(OBJECTS[int(rng.integers(len(OBJECTS)))])
        if _complete(objs) == [scene]:
            return objs


def _clutter(cv: Canvas, n: int) -> None:
    for _ in range(n):
        cy, cx = cv.rng.uniform(0, cv.size, 2)
        r = float(cv.rng.uniform(3, 9)) * cv.size / 224
        c = cv.pick(CLUTTER_COLORS)
        k = int(cv.rng.integers(3))
        if k == 0:
            cv.paint(*cv.ellipse(cy, cx, r, r * cv.rng.uniform(0.5, 1.5)), c)
        elif k == 1:
            cv.paint(*cv.rect(cy - r, cy + r, cx - r * 0.6, cx + r * 0.6), c)
        else:
            a = cv.rng.uniform(0, np.pi)
            cv.paint(*cv.segment(cy, cx, cy + np.sin(a) * r * 2.5, cx + np.cos(a) * r * 2.5,
                                 2.0), c)


def _draw(rng: np.random.Generator, size: int, scene: int, objs: set[str],
          hide: str | None = None) -> Canvas | None:
    """Paint one image; `hide` paints that object on a scratch canvas (same random draws, not
    shown), so the result is the same scene without it. None when over-occluded."""
    cv = Canvas(size, rng)
    bg = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    bg2 = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    tex = TEXTURES[int(rng.integers(len(TEXTURES)))] if rng.random() < 0.7 else None
    if tex not in (None, "noisy") and bg2 != bg:
        cv.banned = {bg, bg2}
    else:
        tex = None if tex != "noisy" else tex
        cv.banned = {bg}
    cv.paint_all(tex, bg, bg2, float(rng.uniform(4, 10)) * size / 224)
    _clutter(cv, int(rng.integers(2, 7)))
    order = [o for o in BACKDROP if o in objs]
    rest = [o for o in OBJECTS if o in objs and o not in BACKDROP]
    order += [rest[i] for i in rng.permutation(len(rest))]
    drawn = {}
    for o in order:
        if o == hide:
            scratch = Canvas(size, rng)
            scratch.banned = cv.banned
            PAINTERS[o](scratch)
            drawn[o] = int(np.count_nonzero(scratch.obj == _OIDX[o]))
            continue
        PAINTERS[o](cv)
        drawn[o] = int(np.count_nonzero(cv.obj == _OIDX[o]))
    if rng.random() < 0.5:
        _clutter(cv, int(rng.integers(1, 4)))    # occluders on top
    if hide is not None:
        return cv            # the shown twin decided acceptance
    visible = np.bincount(cv.obj.ravel(), minlength=len(OBJECTS) + 1)
    for o in SCENES[SCENE_NAMES[scene]]:
        if drawn[o] < 20 or visible[_OIDX[o]] < MIN_VISIBLE * drawn[o]:
            return None
    return cv


def render(seed: int, index: int, size: int = 224, restyle=None) -> Sample:
    """Image `index` of world `seed` (redrawn until unambiguous and not over-occluded).

    `restyle` ("sea:snow" or a styles.Restyle): the same scene with that concept repainted.
    """
    rng = np.random.default_rng([seed, index])
    scene = int(rng.integers(len(SCENE_NAMES)))
    while True:
        objs = choose_objects(rng, scene)
        cv = _draw(rng, size, scene, objs)
        if cv is not None:
            sample = Sample(cv.rgb, cv.color, cv.obj, cv.part, cv.tex, scene,
                            tuple(o for o in OBJECTS if o in objs))
            if restyle:
                from dissect.toyworld.styles import apply_restyle, parse_restyle
                apply_restyle(sample, parse_restyle(restyle), seed, index)
            return sample


def render_pair(seed: int, index: int, obj: str, size: int = 224) -> tuple[Sample, Sample]:
    """Scene `index` of world `seed` drawn with `obj` (added when the scene lacks it) and
    without it: every other stroke identical. Each twin's `scene` is the one scene its objects
    complete, or -1 when none (or two) is complete."""
    if obj not in _OIDX:
        raise ValueError(f"unknown ToyWorld object '{obj}'; choose from {', '.join(OBJECTS)}")
    rng = np.random.default_rng([seed, index])
    scene = int(rng.integers(len(SCENE_NAMES)))
    while True:
        objs = choose_objects(rng, scene) | {obj}
        state = rng.bit_generator.state
        shown = _draw(rng, size, scene, objs)
        if shown is None:
            continue
        twin = np.random.default_rng()
        twin.bit_generator.state = state
        hidden = _draw(twin, size, scene, objs, hide=obj)
        out = []
        for cv, present in ((shown, objs), (hidden, objs - {obj})):
            done = _complete(present)
            out.append(Sample(cv.rgb, cv.color, cv.obj, cv.part, cv.tex,
                              done[0] if len(done) == 1 else -1,
                              tuple(o for o in OBJECTS if o in present)))
        return out[0], out[1]


def pool2(rgb: np.ndarray) -> np.ndarray:
    """2×2 average pool of an H×W×3 uint8 image (rounded), as the model's own input pooling."""
    a = rgb.astype(np.uint16)
    x = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return ((x + 2) >> 2).astype(np.uint8)


def render_batch(seed: int, start: int, count: int, size: int = 112,
                 render_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Images start..start+count-1 as uint8 N×3×size×size (pooled from render_size) + scenes."""
    factor = render_size // size
    x = np.empty((count, 3, size, size), np.uint8)
    y = np.empty(count, np.int64)
    for k in range(count):
        s = render(seed, start + k, render_size)
        img = s.rgb
        while img.shape[0] > size and factor > 1:
            img = pool2(img)
        x[k] = img.transpose(2, 0, 1)
        y[k] = s.scene
    return x, y


def _batch_job(args):
    return render_batch(*args)


def render_parallel(seed: int, count: int, workers: int = 2, size: int = 112,
                    chunk: int = 2000, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """render_batch over `workers` processes (identical result to one process)."""
    jobs = [(seed, s, min(chunk, count - s), size) for s in range(0, count, chunk)]
    x = np.empty((count, 3, size, size), np.uint8)
    y = np.empty(count, np.int64)
    if workers <= 1:
        results = map(_batch_job, jobs)
        pool = None
    else:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap(_batch_job, jobs)
    try:
        for (_, s, n, _), (bx, by) in zip(jobs, results):
            x[s:s + n], y[s:s + n] = bx, by
            if progress:
                progress(s + n, count)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return x, y
