"""One painter per ToyWorld object: random position, scale and colour; parts labelled.

    from dissect.toyworld.objects import PAINTERS
    PAINTERS["house"](canvas)      # paints walls (object "house"), roof, door, windows (parts)

Sizes are given for a 224 px canvas and scaled with the canvas.
"""
from __future__ import annotations

import numpy as np

from dissect.toyworld.canvas import Canvas
from dissect.toyworld.world import OBJECT_COLORS, TEXTURES

BODY_TEXTURE_P = 0.25   # chance a body (walls, car, sail, kite, fish) is patterned


def _u(cv: Canvas, lo: float, hi: float) -> float:
    return float(cv.rng.uniform(lo, hi)) * cv.size / 224.0


def _pos(cv: Canvas, margin: float = 0.1) -> tuple[float, float]:
    s = cv.size
    return float(cv.rng.uniform(margin * s, (1 - margin) * s)), \
        float(cv.rng.uniform(margin * s, (1 - margin) * s))


def _body_tex(cv: Canvas, color: str):
    if cv.rng.random() < BODY_TEXTURE_P:
        tex = TEXTURES[int(cv.rng.integers(len(TEXTURES)))]
        return tex, cv.pick(list(OBJECT_COLORS["car"]) + ["white", "black"], exclude=(color,))
    return None, None


def _paint_body(cv, b, m, color, obj, part=None):
    tex, c2 = _body_tex(cv, color)
    cv.paint(b, m, color, obj=obj, part=part, tex=tex, color2=c2, scale=_u(cv, 3, 5))


def sun(cv: Canvas) -> None:
    cy, cx = _pos(cv)
    r = _u(cv, 14, 24)
    c = cv.pick(OBJECT_COLORS["sun"])
    if cv.rng.random() < 0.5:   # rays
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False) + cv.rng.uniform(0, 1):
            cv.paint(*cv.segment(cy + np.sin(a) * r * 1.2, cx + np.cos(a) * r * 1.2,
                                 cy + np.sin(a) * r * 1.6, cx + np.cos(a) * r * 1.6,
                                 max(2.0, r * 0.15)), c, obj="sun")
    cv.paint(*cv.ellipse(cy, cx, r, r), c, obj="sun")


def moon(cv: Canvas) -> None:
    cy, cx = _pos(cv)
    r = _u(cv, 14, 24)
    b, m = cv.ellipse(cy, cx, r, r)
    if b is None:
        return
    Y, X = cv.grid(b, cy - r * 0.25, cx + r * 0.45 * (1 if cv.rng.random() < 0.5 else -1))
    m = m & ((Y / r) ** 2 + (X / r) ** 2 > 0.85)
    cv.paint(b, m, cv.pick(OBJECT_COLORS["moon"]), obj="moon")


def star(cv: Canvas) -> None:
    c = cv.pick(OBJECT_COLORS["star"])
    for _ in range(int(cv.rng.integers(3, 7))):
        cy, cx = _pos(cv, 0.05)
        cv.paint(*cv.star(cy, cx, _u(cv, 7, 12), rot=float(cv.rng.uniform(0, 6.3))), c,
                 obj="star")


def cloud(cv: Canvas) -> None:
    cy, cx = _pos(cv)
    w = _u(cv, 36, 64)
    c = cv.pick(OBJECT_COLORS["cloud"])
    for i in range(4):
        dx = (i / 3 - 0.5) * w * 0.7
        ry = w * float(cv.rng.uniform(0.2, 0.32))
        cv.paint(*cv.ellipse(cy - (ry * 0.3 if i in (1, 2) else 0), cx + dx, ry, ry * 1.3), c,
                 obj="cloud")


def bird(cv: Canvas) -> None:
    c = cv.pick(OBJECT_COLORS["bird"])
    for _ in range(int(cv.rng.integers(2, 5))):
        cy, cx = _pos(cv)
        w = _u(cv, 9, 15)
        t = max(2.5, w * 0.3)
        cv.paint(*cv.segment(cy - w * 0.5, cx - w, cy, cx, t), c, obj="bird")
        cv.paint(*cv.segment(cy, cx, cy - w * 0.5, cx + w, t), c, obj="bird")


def kite(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.15)
    h, w = _u(cv, 18, 28), _u(cv, 12, 20)
    c = cv.pick(OBJECT_COLORS["kite"])
    cv.paint(*cv.segment(cy + h, cx, cy + h + _u(cv, 30, 60), cx + _u(cv, -30, 30), 2.0),
             "black" if "black" not in cv.banned else "white", obj="kite", part="tail")
    b, m = cv.polygon([(cy - h, cx), (cy, cx + w), (cy + h, cx), (cy, cx - w)])
    _paint_body(cv, b, m, c, "kite")


def mountain(cv: Canvas) -> None:
    s = cv.size
    base = float(cv.rng.uniform(0.55, 0.9)) * s
    cx = float(cv.rng.uniform(0.2, 0.8)) * s
    h, w = _u(cv, 60, 110), _u(cv, 55, 95)
    c = cv.pick(OBJECT_COLORS["mountain"])
    cv.paint(*cv.polygon([(base, cx - w), (base - h, cx), (base, cx + w)]), c, obj="mountain")
    if cv.rng.random() < 0.6:
        f = 0.3
        cv.paint(*cv.polygon([(base - h * (1 - f), cx - w * f), (base - h, cx),
                              (base - h * (1 - f), cx + w * f)]),
                 cv.pick(("white",), exclude=(c,)), obj="mountain")


def sea(cv: Canvas) -> None:
    s = cv.size
    top = float(cv.rng.uniform(0.55, 0.78)) * s
    b = cv.box(top - 6, s, 0, s)
    Y, X = cv.grid(b, top, 0)
    amp, lam = _u(cv, 2, 5), _u(cv, 20, 45)
    m = Y >= amp * np.sin(X * 2 * np.pi / lam)
    c = cv.pick(OBJECT_COLORS["sea"])
    tex = "wavy" if cv.rng.random() < 0.3 else None
    cv.paint(b, m, c, obj="sea", tex=tex, color2=cv.pick(("white", "blue", "cyan"), (c,)),
             scale=_u(cv, 4, 7))


def road(cv: Canvas) -> None:
    s = cv.size
    h = _u(cv, 26, 44)
    top = float(cv.rng.uniform(0.5, 0.95)) * s - h
    c = cv.pick(OBJECT_COLORS["road"])
    cv.paint(*cv.rect(top, top + h, 0, s), c, obj="road")
    lc = cv.pick(("white", "yellow"))
    y = top + h / 2
    for x in np.arange(float(cv.rng.uniform(0, 20)), s, _u(cv, 26, 36)):
        cv.paint(*cv.rect(y - 1.5, y + 1.5, x, x + _u(cv, 10, 14)), lc, obj="road")


def tree(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.12)
    h = _u(cv, 45, 80)
    tw = max(3.0, h * 0.12)
    cv.paint(*cv.rect(cy, cy + h * 0.45, cx - tw / 2, cx + tw / 2),
             cv.pick(("brown",), exclude=()), obj="tree", part="trunk")
    c = cv.pick(OBJECT_COLORS["tree"])
    if cv.rng.random() < 0.5:
        cv.paint(*cv.ellipse(cy - h * 0.12, cx, h * 0.32, h * 0.28), c, obj="tree", part="crown")
    else:
        cv.paint(*cv.polygon([(cy + h * 0.1, cx - h * 0.3), (cy - h * 0.55, cx),
                              (cy + h * 0.1, cx + h * 0.3)]), c, obj="tree", part="crown")


def house(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.15)
    w, h = _u(cv, 40, 64), _u(cv, 30, 48)
    c = cv.pick(OBJECT_COLORS["house"])
    b, m = cv.rect(cy, cy + h, cx - w / 2, cx + w / 2)
    _paint_body(cv, b, m, c, "house")
    rc = cv.pick(("red", "brown", "black", "grey"), exclude=(c,))
    cv.paint(*cv.polygon([(cy, cx - w * 0.6), (cy - h * 0.6, cx), (cy, cx + w * 0.6)]), rc,
             obj="house", part="roof")
    dc = cv.pick(("brown", "black", "blue", "green"), exclude=(c,))
    cv.paint(*cv.rect(cy + h * 0.45, cy + h, cx - w * 0.1, cx + w * 0.1), dc, obj="house",
             part="door")
    wc = cv.pick(("cyan", "blue", "white", "yellow"), exclude=(c,))
    for sx in (-0.3, 0.3):
        cv.paint(*cv.rect(cy + h * 0.2, cy + h * 0.45, cx + w * sx - w * 0.1,
                          cx + w * sx + w * 0.1), wc, obj="house", part="window")


def fence(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.2)
    w, h = _u(cv, 60, 110), _u(cv, 22, 34)
    c = cv.pick(OBJECT_COLORS["fence"])
    x0 = cx - w / 2
    step = _u(cv, 9, 13)
    for x in np.arange(x0, x0 + w, step):
        cv.paint(*cv.polygon([(cy + h, x), (cy, x), (cy - 3, x + 2.5), (cy, x + 5),
                              (cy + h, x + 5)]), c, obj="fence")
    for f in (0.3, 0.7):
        cv.paint(*cv.rect(cy + h * f - 1.5, cy + h * f + 1.5, x0, x0 + w), c, obj="fence")


def flower(cv: Canvas) -> None:
    pc = cv.pick(OBJECT_COLORS["flower"])
    for _ in range(int(cv.rng.integers(1, 4))):
        cy, cx = _pos(cv, 0.12)
        r = _u(cv, 5, 8)
        cv.paint(*cv.rect(cy, cy + r * 4, cx - 1.5, cx + 1.5), cv.pick(("green",)),
                 obj="flower", part="stem")
        for a in np.linspace(0, 2 * np.pi, 6, endpoint=False):
            cv.paint(*cv.ellipse(cy + np.sin(a) * r, cx + np.cos(a) * r, r * 0.6, r * 0.6), pc,
                     obj="flower", part="petal")
        cv.paint(*cv.ellipse(cy, cx, r * 0.5, r * 0.5), cv.pick(("yellow", "orange", "brown"),
                                                               exclude=(pc,)), obj="flower")


def car(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.15)
    w, h = _u(cv, 48, 72), _u(cv, 14, 20)
    c = cv.pick(OBJECT_COLORS["car"])
    b, m = cv.rect(cy - h * 0.9, cy, cx - w * 0.28, cx + w * 0.22)
    cv.paint(b, m, c, obj="car")
    wc = cv.pick(("cyan", "white", "blue"), exclude=(c,))
    cv.paint(*cv.rect(cy - h * 0.7, cy - h * 0.15, cx - w * 0.22, cx + w * 0.16), wc, obj="car",
             part="window")
    b, m = cv.rect(cy, cy + h, cx - w / 2, cx + w / 2)
    _paint_body(cv, b, m, c, "car")
    r = h * 0.45
    for sx in (-0.3, 0.3):
        cv.paint(*cv.ellipse(cy + h, cx + w * sx, r, r), "black" if c != "black" else "grey",
                 obj="car", part="wheel")


def boat(cv: Canvas) -> None:
    cy, cx = _pos(cv, 0.15)
    w, h = _u(cv, 40, 64), _u(cv, 10, 16)
    c = cv.pick(OBJECT_COLORS["boat"])
    cv.paint(*cv.polygon([(cy, cx - w / 2), (cy, cx + w / 2), (cy + h, cx + w * 0.35),
                          (cy + h, cx - w * 0.35)]), c, obj="boat", part="hull")
    sh = _u(cv, 26, 44)
    cv.paint(*cv.rect(cy - sh, cy, cx - 1, cx + 1.5), "brown" if c != "brown" else "black",
             obj="boat")
    sc = cv.pick(("white", "red", "yellow", "orange"), exclude=(c,))
    b, m = cv.polygon([(cy - 2, cx + 3), (cy - sh, cx + 3), (cy - 2, cx + 3 + sh * 0.6)])
    _paint_body(cv, b, m, sc, "boat", part="sail")


def fish(cv: Canvas) -> None:
    c = cv.pick(OBJECT_COLORS["fish"])
    for _ in range(int(cv.rng.integers(1, 3))):
        cy, cx = _pos(cv, 0.12)
        L = _u(cv, 26, 42)
        d = 1 if cv.rng.random() < 0.5 else -1
        cv.paint(*cv.polygon([(cy, cx - d * L * 0.35), (cy - L * 0.25, cx - d * L * 0.6),
                              (cy + L * 0.25, cx - d * L * 0.6)]), c, obj="fish", part="tail")
        b, m = cv.ellipse(cy, cx, L * 0.22, L * 0.4)
        _paint_body(cv, b, m, c, "fish")
        cv.paint(*cv.ellipse(cy - L * 0.05, cx + d * L * 0.22, 2, 2),
                 "black" if c != "black" else "white", obj="fish")


PAINTERS = {f.__name__: f for f in [sun, moon, star, cloud, bird, kite, mountain, sea, road,
                                     tree, house, fence, flower, car, boat, fish]}
# drawing order: big backdrops first, then the rest in a random order
BACKDROP = ["mountain", "sea", "road"]
