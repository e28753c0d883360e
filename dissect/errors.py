"""The errors a user can cause; the CLI and the app show their message, not a traceback.

Every error class lives here, above the modules that raise them, so this module imports no
other module of the project (and no torch): `from dissect.errors import RunError` is cheap.
"""
from __future__ import annotations

import difflib


class FetchError(ValueError):
    """A download that cannot happen or did not finish; the message names the file and the fix."""


class LayerNotFound(KeyError):
    """A layer name the model does not have; the message lists the closest names."""

    def __init__(self, name: str, model):      # any torch.nn.Module
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"layer '{name}' is not a module of {type(model).__name__}.{hint} "
            f"List the layers with: python -m dissect layers --model <name>"
        )

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return self.args[0]


class ModelError(ValueError):
    """A model or weights problem; the message names the thing and the fix."""


class ProbeError(ValueError):
    """Bad probe data; the message names the file or key and the fix."""


class DirectionError(ValueError):
    """A bad direction/readout/steering/TCAV request; the message names the thing and the fix."""


class LayerError(ValueError):
    """A layer that cannot be dissected (e.g. no spatial output); names the fix."""


class RunError(ValueError):
    """A run folder that is missing, incomplete, failed or from another version."""


class AblationError(ValueError):
    """A bad ablation request (unit out of range, unknown class, unreadable image, empty set)."""


class TraceError(ValueError):
    """A bad causal-tracing request (unknown corruption, concept absent, no layer)."""


class RewriteError(ValueError):
    """A bad rewrite request: layer, concept, exemplars, edit file; the message names the fix."""


class VisualizeError(ValueError):
    """A bad visualisation request (--steps, --size, basis, units); the message names the fix."""


class FeatureError(ValueError):
    """A bad dictionary-features request (K, topk, method, layer, cache); names the fix."""


class LayoutError(ValueError):
    """A layer output that cannot be read in the asked layout; the message names the fix."""


class OptionError(ValueError):
    """A command-line option out of its range (checked before anything runs); names the fix."""


USER_ERRORS = (AblationError, DirectionError, FetchError, LayerNotFound, ModelError, ProbeError,
               LayerError, RunError, FileNotFoundError, TraceError, RewriteError, VisualizeError,
               FeatureError, LayoutError, OptionError)
