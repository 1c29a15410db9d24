"""Task-balancing methods, one file each: ``<name>_weights`` (pure), ``<Name>State``, ``<name>()``."""

from mtlx.weighting._ew import ew
from mtlx.weighting._mean import mean
from mtlx.weighting._mgda import mgda, mgda_weights
from mtlx.weighting._pcgrad import PCGradState, pcgrad, pcgrad_weights
from mtlx.weighting._scalarization import scalarization
from mtlx.weighting._upgrad import upgrad, upgrad_weights

__all__ = sorted(name for name in dir() if not name.startswith("_"))
