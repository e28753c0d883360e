"""The errors a user can cause; the CLI and the app show their message, not a traceback."""
from dissect.fetch import FetchError
from dissect.hooks import LayerNotFound
from dissect.models import ModelError
from dissect.probe import ProbeError
from dissect.features import DirectionError
from dissect.layout import LayoutError


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


USER_ERRORS = (AblationError, DirectionError, FetchError, LayerNotFound, ModelError, ProbeError, LayerError, RunError, FileNotFoundError,
               TraceError, RewriteError, LayoutError)
