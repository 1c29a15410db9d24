"""Task-balancing methods, one file each: ``<name>_weights`` (pure), ``<Name>State``, ``<name>()``."""

from mtlx._src.linalg import cross_gramian
from mtlx._src.weighting import (
    Stats,
    TaskWeights,
    Weighting,
    WeightingTransformation,
    as_transform,
)
from mtlx.weighting._adatask import ScaleByAdaTaskState, adatask, scale_by_adatask
from mtlx.weighting._aligned_mtl import aligned_mtl, aligned_mtl_weights
from mtlx.weighting._cagrad import cagrad, cagrad_weights
from mtlx.weighting._config import config, config_weights
from mtlx.weighting._cosmos import cosmos, cosmos_weights
from mtlx.weighting._cr_mogm import CRMOGMState, cr_mogm, cr_mogm_weights
from mtlx.weighting._db_mtl import DBMTLState, db_mtl, db_mtl_weights
from mtlx.weighting._dualproj import dualproj, dualproj_weights
from mtlx.weighting._dwa import DWAState, dwa, dwa_weights
from mtlx.weighting._ew import ew
from mtlx.weighting._excess_mtl import ExcessMTLState, excess_mtl, excess_mtl_weights
from mtlx.weighting._fairgrad import fairgrad, fairgrad_weights
from mtlx.weighting._famo import FAMOState, famo, famo_logits_gradient, famo_weights
from mtlx.weighting._gls import gls, gls_weights
from mtlx.weighting._graddrop import GradDropState, graddrop, graddrop_rows
from mtlx.weighting._gradnorm import (
    GradNormState,
    gradnorm,
    gradnorm_logits_gradient,
    gradnorm_weights,
)
from mtlx.weighting._gradvac import GradVacState, gradvac, gradvac_weights
from mtlx.weighting._imtl import imtl, imtl_weights
from mtlx.weighting._imtl_g import imtl_g, imtl_g_weights
from mtlx.weighting._imtl_l import IMTLLState, imtl_l, imtl_l_scale_gradient, imtl_l_weights
from mtlx.weighting._krum import krum, krum_weights
from mtlx.weighting._mean import mean
from mtlx.weighting._mgda import mgda, mgda_weights
from mtlx.weighting._moco import MoCoState, moco, moco_weights
from mtlx.weighting._modo import MoDoState, modo, modo_weights
from mtlx.weighting._nash_mtl import NashMTLState, nash_mtl, nash_mtl_weights
from mtlx.weighting._pbi import pbi, pbi_weights
from mtlx.weighting._pcd import PCDState, pcd, pcd_weights
from mtlx.weighting._pcgrad import PCGradState, pcgrad, pcgrad_weights
from mtlx.weighting._rgw import rgw
from mtlx.weighting._rlw import (
    RLWState,
    random_normal_parameters,
    random_row_weights,
    rlw,
    rlw_weights,
)
from mtlx.weighting._scalarization import scalarization
from mtlx.weighting._scalarization_sweep import scalarization_sweep, simplex_grid
from mtlx.weighting._sdmgrad import SDMGradState, sdmgrad, sdmgrad_weights
from mtlx.weighting._skip_nonfinite import SkipNonFiniteState, skip_nonfinite
from mtlx.weighting._stch import STCHState, stch, stch_weights
from mtlx.weighting._trimmed_mean import trimmed_mean, trimmed_mean_rows
from mtlx.weighting._upgrad import upgrad, upgrad_weights
from mtlx.weighting._uw import UWState, uw, uw_log_var_grad, uw_weights
from mtlx.weighting._uw_so import uw_o, uw_o_weights, uw_so, uw_so_weights

__all__ = sorted(name for name in dir() if not name.startswith("_"))
