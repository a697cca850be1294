"""GEDA: subsets whose gradient-norm ECDF matches the pool's (ECDF algebra in :mod:`.ecdf`, the binned
selector and its solvers in :mod:`.selector`, the smoothed-ECDF variant in :mod:`.smooth`, gradient-matching
weights in :mod:`.online`)."""

from jaxsubset.selectors.geda.online import online_geda
from jaxsubset.selectors.geda.selector import available_solvers, geda
from jaxsubset.selectors.geda.smooth import geda_smoothed

__all__ = ["geda", "available_solvers", "geda_smoothed", "online_geda"]
