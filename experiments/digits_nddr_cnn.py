r"""Multi-Digits with NDDR-CNN (Gao et al., CVPR 2019): ``mtlx.models.nddr_cnn``, MLP backbone.

Two tasks (left and right digit of an 8 x 16 pair), one MLP column (128 -> 128 -> 128 -> 128) per
task, NDDR layers (concatenate, 1 x 1 projection, BN, ReLU) after the first two layers; Adam 1e-3,
1500 steps of batch 64, as ``experiments/digits_mlp.py`` (hard sharing) so that the architectures
compare.

Command::

  python -m mtlx.train --config experiments/digits_nddr_cnn.py --method ew pcgrad upgrad

Expected (measured, seed 0, EW only: ``--method ew --baselines none``): test accuracy
0.9733 / 0.9666 (left / right); ``experiments/digits_mlp.py`` (hard sharing) gives 0.9710 / 0.9621.

Wall time: 47 s for that EW command on the shared 2-core CPU machine (three jobs running);
the full command adds PCGrad and UPGrad and first the two single-task runs of Δm's base.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="nddr_cnn", model_kwargs={"hidden": (128, 128, 128)})


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
