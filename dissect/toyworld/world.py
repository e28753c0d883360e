"""ToyWorld's vocabulary: colours, objects, parts, textures and the scenes they define.

    from dissect.toyworld.world import SCENES, OBJECTS, concept_table
    SCENES["beach"]            # ("sea", "sun", "boat"): an image is a beach iff all three show
    concept_table()            # [(id, name, category)], Broden numbering (ids from 1, no 0 row)

A scene is defined only by the set of objects it contains; background colour, texture and
clutter are drawn independently of the scene, so a classifier has to detect objects.
"""
from __future__ import annotations

# name -> base RGB. Each painted pixel is labelled with the name of the colour it was painted
# with (jittered by at most ±JITTER per channel, so names stay unambiguous).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (240, 220, 50),
    "green": (50, 160, 60),
    "blue": (40, 80, 200),
    "cyan": (70, 200, 220),
    "purple": (130, 60, 170),
    "pink": (240, 150, 190),
    "brown": (120, 75, 40),
    "black": (25, 25, 25),
    "white": (240, 240, 240),
    "grey": (128, 128, 128),
}
JITTER = 14

OBJECTS: list[str] = [
    "sun", "moon", "star", "cloud", "bird", "kite", "mountain", "sea", "road",
    "tree", "house", "fence", "flower", "car", "boat", "fish",
]
PARTS: list[str] = [
    "wheel", "window", "roof", "door", "trunk", "crown", "sail", "hull", "petal", "stem", "tail",
]
TEXTURES: list[str] = ["striped", "dotted", "checkered", "wavy", "noisy"]

# scene -> the objects that define it (all must be visible; no other scene's full set may be)
SCENES: dict[str, tuple[str, ...]] = {
    "beach": ("sea", "sun", "boat"),
    "harbor": ("sea", "boat", "house"),
    "sky": ("sun", "cloud", "bird"),
    "night": ("moon", "star"),
    "street": ("road", "car", "house"),
    "garden": ("flower", "fence", "tree"),
    "alpine": ("mountain", "tree", "cloud"),
    "lake": ("fish", "sea", "mountain"),
    "park": ("kite", "road", "flower"),
}
SCENE_NAMES: list[str] = list(SCENES)

# colours each object kind may be painted with (background colours are excluded per image)
OBJECT_COLORS: dict[str, tuple[str, ...]] = {
    "sun": ("yellow", "orange", "red"),
    "moon": ("white", "yellow", "grey"),
    "star": ("yellow", "white"),
    "cloud": ("white", "grey"),
    "bird": ("black", "brown", "blue", "red"),
    "kite": ("red", "purple", "orange", "pink", "cyan"),
    "mountain": ("grey", "brown", "purple", "green"),
    "sea": ("blue", "cyan"),
    "road": ("grey", "black"),
    "tree": ("green",),
    "house": ("red", "yellow", "white", "pink", "orange", "brown"),
    "fence": ("brown", "white", "grey"),
    "flower": ("red", "pink", "purple", "yellow", "orange", "white"),
    "car": ("red", "blue", "yellow", "green", "black", "white", "cyan"),
    "boat": ("white", "red", "brown", "orange"),
    "fish": ("orange", "yellow", "red", "purple", "pink"),
}

CATEGORIES: list[str] = ["color", "object", "part", "scene", "texture"]
PIXEL_CATEGORIES: list[str] = ["color", "object", "part", "texture"]


def _ranges() -> dict[str, tuple[int, list[str]]]:
    names = {"color": list(COLORS), "object": OBJECTS, "part": PARTS,
             "texture": TEXTURES, "scene": SCENE_NAMES}
    out, first = {}, 1
    for cat in ["color", "object", "part", "texture", "scene"]:
        out[cat] = (first, names[cat])
        first += len(names[cat])
    return out


RANGES = _ranges()


def concept_id(category: str, name: str) -> int:
    """Global (Broden label.csv) number of `name` in `category`."""
    first, names = RANGES[category]
    return first + names.index(name)


def concept_table() -> list[tuple[int, str, str]]:
    """[(number, name, category)] for every concept, in number order."""
    rows = []
    for cat, (first, names) in RANGES.items():
        rows += [(first + i, n, cat) for i, n in enumerate(names)]
    return sorted(rows)
