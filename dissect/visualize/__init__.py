"""Feature visualisation: the image a unit, feature or direction wants to see, and its trust.

    from dissect.visualize import VisConfig, Targets, draw, optimise
    rows = draw(lm, "conv6", Targets.of_units([3]), VisConfig(steps=256, size=112), out="vis/")

Modules: config (hyperparameters), params (fourier, maco), transforms, objectives, optimize
(the loop, K targets in one batch), trust (reach, stability, path check), png, sources (what to
visualise, checked), draw (all of it, as the CLI and the studio call it).
"""
from dissect.visualize.config import METHODS, MIN_SIZE, VisConfig
from dissect.visualize.draw import draw, file_name
from dissect.visualize.objectives import Targets
from dissect.visualize.optimize import Visualisation, optimise

__all__ = ["METHODS", "MIN_SIZE", "VisConfig", "Targets", "Visualisation", "draw", "file_name",
           "optimise"]
