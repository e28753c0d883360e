"""The unit page's "Save as direction" for a dictionary feature (not a page).

    save_section(run_path, stamp, "conv6@sae512", 3)      # a name box, Replace, the button
    out = save_feature_direction(root, run, "conv6@sae512", 3, "sun-f3")   # what it calls

The feature's decoder row is saved as a direction folder, exactly as
`python -m dissect direction --feature RUN conv6@sae512 3 --out DIR` saves it
(dissect.features.direction.feature_direction, dissect.directions.concept.save_direction),
into <runs>/directions/NAME, where the Directions page, the ablation lab's steering and
`steer` / `tcav` find it. NAME is one plain folder name that resolves inside the runs folder;
a folder already there is replaced only when it is a direction folder and "Replace" is ticked
(dissect.runs.marker.prepare_out, as --overwrite): anything else is refused, never written into.
"""
from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

from dissect.errors import DirectionError, RunError
from dissect.features.layer import parse_feature_layer

NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")
SAVED = "feat_dir_saved"


def default_name(layer: str, feature: int, label: str) -> str:
    """sun-conv6-sae512-f3: a name NAME_OK accepts."""
    text = f"{label or 'feature'}-{layer.replace('@', '-')}-f{int(feature)}"
    text = re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.") or f"feature-{int(feature)}"
    return text[:80] if text[0].isalnum() else f"f{text}"[:80]


def direction_folder(root: str | Path, name: str) -> Path:
    """root/directions/NAME when NAME is one plain folder name and the folder resolves inside
    the runs folder `root`; else one DirectionError line naming the fix."""
    if not isinstance(name, str) or not NAME_OK.fullmatch(name) or name in (".", ".."):
        raise DirectionError(f"'{str(name)[:40]}' cannot name a direction: use letters, digits, "
                             "'-', '_' or '.' (no slashes), at most 81 characters")
    root = Path(root).resolve()
    parent = (root / "directions").resolve()
    try:
        parent.relative_to(root)
    except ValueError:
        raise DirectionError("the runs folder's 'directions' is a link that leaves the runs "
                             "folder; remove it or make it a plain folder") from None
    return parent / name


def save_feature_direction(root: str | Path, run, layer: str, feature: int, name: str,
                           overwrite: bool = False) -> Path:
    """Save feature `feature` of feature layer `layer` of `run` as <root>/directions/`name`;
    the folder's path. OverwriteRefused (a RunError) when the folder holds a direction and
    `overwrite` is False, or holds anything else; DirectionError / FeatureError for a bad name,
    layer or feature. Nothing is written on any error."""
    from dissect.directions.concept import save_direction
    from dissect.features.direction import feature_direction
    from dissect.runs.marker import prepare_out
    out = direction_folder(root, name)
    prepare_out(out, "direction", overwrite=overwrite, clear=False, flag="the direction name")
    d = feature_direction(run, layer, int(feature))
    return save_direction(d, out)


def save_section(run_path: str, stamp: str, layer: str, feature: int, label: str) -> None:
    """A feature's "Save as direction": name, Replace, the button; then the path and a link."""
    from dissect.errors import USER_ERRORS
    from studio.common import runs_root, short_error
    from studio.data import get_run
    from studio.nav import page_link
    parsed = parse_feature_layer(layer)
    if parsed is None:
        return
    st.subheader("Save as direction")
    st.caption(f"Feature {feature}'s decoder row, a direction in the activation space of "
               f"`{parsed[0]}`, saved under the runs folder's directions/: steer and measure it "
               "on the Directions page, in the ablation lab, or with `steer` / `tcav`.")
    c1, c2, c3 = st.columns([3, 1, 1.4], vertical_alignment="bottom")
    name = c1.text_input("Direction name", value=default_name(layer, feature, label),
                         key=f"feat_dir_name_{layer}_{feature}")
    replace = c2.checkbox("Replace", key="feat_dir_overwrite",
                          help="Replace a direction already saved under this name (only a "
                               "direction folder is ever replaced)")
    here = (run_path, layer, int(feature))
    if c3.button("Save as direction", key="feat_dir_save", icon=":material/save:",
                 type="primary", width="stretch"):
        root = runs_root()
        try:
            out = save_feature_direction(root, get_run(run_path, stamp), layer, feature, name,
                                         overwrite=replace)
            st.session_state[SAVED] = (here, str(out))
        except USER_ERRORS + (RunError,) as e:
            st.session_state.pop(SAVED, None)
            st.error(short_error(e, root))
    saved = st.session_state.get(SAVED)
    if saved and saved[0] == here:
        st.success(f"Saved to `{saved[1]}`")
        page_link("directions", label="Open the Directions page")
