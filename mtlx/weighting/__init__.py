"""Task-balancing methods, one file each: ``<name>_weights`` (pure), ``<Name>State``, ``<name>()``."""

from mtlx._src.linalg import cross_gramian
from mtlx.weighting._aligned_mtl import aligned_mtl, aligned_mtl_weights
from mtlx.weighting._cagrad import cagrad, cagrad_weights
from mtlx.weighting._config import config, config_weights
from mtlx.weighting._cr_mogm import CRMOGMState, cr_mogm, cr_mogm_weights
from mtlx.weighting._dualproj import dualproj, dualproj_weights
from mtlx.weighting._ew import ew
from mtlx.weighting._excess_mtl import ExcessMTLState, excess_mtl, excess_mtl_weights
from mtlx.weighting._fairgrad import fairgrad, fairgrad_weights
from mtlx.weighting._graddrop import GradDropState, graddrop, graddrop_rows
from mtlx.weighting._gradvac import GradVacState, gradvac, gradvac_weights
from mtlx.weighting._imtl_g import imtl_g, imtl_g_weights
from mtlx.weighting._krum import krum, krum_weights
from mtlx.weighting._mean import mean
from mtlx.weighting._mgda import mgda, mgda_weights
from mtlx.weighting._moco import MoCoState, moco, moco_weights
from mtlx.weighting._modo import MoDoState, modo, modo_weights
from mtlx.weighting._nash_mtl import NashMTLState, nash_mtl, nash_mtl_weights
from mtlx.weighting._pcd import PCDState, pcd, pcd_weights
from mtlx.weighting._pcgrad import PCGradState, pcgrad, pcgrad_weights
from mtlx.weighting._scalarization import scalarization
from mtlx.weighting._sdmgrad import SDMGradState, sdmgrad, sdmgrad_weights
from mtlx.weighting._trimmed_mean import trimmed_mean, trimmed_mean_rows
from mtlx.weighting._upgrad import upgrad, upgrad_weights

__all__ = sorted(name for name in dir() if not name.startswith("_"))
