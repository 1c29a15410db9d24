"""Gradient-conflict analysis and Recon (per-layer statistics, the conflict monitor, Recon).

* :mod:`~mtlx.analysis.conflict`: cosines, conflict indicators, magnitude similarity, norm ratios
  and sign disagreement per task pair, on the whole shared vector and per layer;
* :func:`conflict_monitor`: an identity optax transform accumulating per-layer conflict counts;
* :mod:`~mtlx.analysis.single_task`: inter-sample vs inter-task conflicts (Elich et al.);
* :mod:`~mtlx.analysis.recon`: Recon's layer scores, selection, splitting and split forward;
* :mod:`~mtlx.analysis.plots`: matplotlib figures (imported lazily).
"""

from mtlx.analysis.conflict import (
    DEFAULT_THRESHOLDS,
    LayerJacobian,
    PairStatistics,
    layer_jacobian,
    layer_names,
    layer_of_path,
    layer_sizes,
    layer_statistics,
    pair_indices,
    pair_labels,
    pairwise_statistics,
    sign_disagreement_matrix,
    statistics_from_gramian,
)
from mtlx.analysis.monitor import (
    RECON_COSINE_BINS,
    ConflictMonitorState,
    conflict_monitor,
    cosine_bin_fractions,
    last_layer_gramians,
    layer_conflict_counts,
    layer_conflict_summary,
    whole_vector_cosines,
)
from mtlx.analysis.recon import (
    ENTRIES_KEY,
    ParameterIncrease,
    conflict_fraction,
    first_layers,
    jaccard,
    last_layers,
    layer_order,
    layer_scores_from_gramians,
    parameter_increase,
    random_layers,
    random_parameter_mask,
    recon_scores,
    select_layers,
    shared_mask,
    split_apply,
    split_axes,
    split_entries,
    split_params,
    split_task_apply,
)
from mtlx.analysis.single_task import (
    SampleConflicts,
    Summary,
    inter_sample_pairs,
    inter_task_pairs,
    sample_conflicts,
    subsample,
    summarize,
)

__all__ = sorted(
    name
    for name in dir()
    if not name.startswith("_") and name not in ("conflict", "monitor", "recon", "single_task")
)
