r"""Multi-Digits with MTAN (Liu et al., CVPR 2019): ``mtlx.models.mtan`` on the MLP backbone.

Two tasks (left and right digit of an 8 x 16 pair), a shared MLP (128 -> 128 -> 128 -> 128) with
per-task attention units at every layer (without batch norm: see ``mtlx.models.MTAN``); Adam 1e-3,
1500 steps of batch 64, as ``experiments/digits_mlp.py`` (hard sharing) so that the architectures
compare.

Command::

  python -m mtlx.train --config experiments/digits_mtan.py --method ew pcgrad upgrad

Expected (measured, seed 0, EW only: ``--method ew --baselines none``): test accuracy
0.9465 / 0.9465 (left / right); ``experiments/digits_mlp.py`` (hard sharing) gives 0.9710 / 0.9621.

Wall time: 50 s for that EW command on the shared 2-core CPU machine (three jobs running);
the full command adds PCGrad and UPGrad and first the two single-task runs of Δm's base.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="mtan", model_kwargs={"hidden": (128, 128, 128), "batch_norm": False})


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
