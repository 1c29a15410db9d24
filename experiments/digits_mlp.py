r"""Multi-Digits with an MLP: the default run of ``python -m mtlx.train`` (offline, CPU, ~2 min).

Two tasks (left and right digit of an 8 x 16 pair of scikit-learn's handwritten digits, 1348
train / 449 test pairs), an MLP trunk (128 -> 256 -> 256) with two linear heads, Adam 1e-3, 1500
steps of batch 64 (about 71 epochs), 50 steps per jitted call.

Command::

  python -m mtlx.train --method ew rlw pcgrad mgda uw_so:temperature=50

(the same as ``--config experiments/digits_mlp.py`` with those methods). UW-SO's temperature: 50,
the best of {0.1, 0.5, 1, 2, 5, 10, 20, 50} in ``experiments/uw_so_vs_scalarization.py`` (3 seeds,
Δm rises monotonically with τ on these cross-entropy losses; τ = 1, the untuned formula, gave
Δm −6.05 here and is 12 points below τ = 50 in that sweep).

Expected (seed 0, measured; test accuracy left / right, Δm against the single-task baselines):

  ======== =============== ======
  method   accuracy        Δm (%)
  ======== =============== ======
  ew       0.9710 / 0.9621 -0.69
  rlw      0.9710 / 0.9599 -0.80
  pcgrad   0.9733 / 0.9621 -0.57
  mgda     0.9688 / 0.9621 -0.80
  uw_so    0.9666 / 0.9621 -0.92    (temperature=50)
  ======== =============== ======

Single-task baselines, which the CLI trains first (the same MLP, data and budget, trained by
``scalarization`` with a one-hot weight; ``--save-baselines FILE`` keeps them, ``--baselines
FILE`` reuses them): 0.9755 (left), 0.9710 (right). Δm = mean over tasks of the signed relative
difference to them, in %, positive = better. Wall time: 53 s for the
whole command (the two single-task runs, then 6-8 s per method, of which a few seconds are
compilation) on the 2-core CPU machine.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig()  # the library default is this experiment


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
