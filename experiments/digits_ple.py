r"""Multi-Digits with PLE (Tang et al., RecSys 2020): ``mtlx.models.ple`` on the MLP backbone.

Two tasks (left and right digit of an 8 x 16 pair), two extraction levels (the MLP's two 128-wide
layers), 2 shared and 1 task-specific expert per level, per-task gates at each level; Adam 1e-3,
1500 steps of batch 64, as ``experiments/digits_mlp.py`` (hard sharing) so that the architectures
compare.

Command::

  python -m mtlx.train --config experiments/digits_ple.py --method ew pcgrad upgrad

Expected (measured, seed 0, EW only: ``--method ew --baselines none``): test accuracy
0.9532 / 0.9421 (left / right); ``experiments/digits_mlp.py`` (hard sharing) gives 0.9710 / 0.9621.

Wall time: 46 s for that EW command on the shared 2-core CPU machine (three jobs running);
the full command adds PCGrad and UPGrad and first the two single-task runs of Δm's base.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="ple", model_kwargs={"hidden": (128, 128), "num_experts": (2, 1)})


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
