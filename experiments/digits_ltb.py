r"""Multi-Digits with Learning to Branch (Guo et al., ICML 2020): ``mtlx.models.ltb``, MLP backbone.

Two tasks (left and right digit of an 8 x 16 pair), an MLP super-graph (128 -> 128 -> 128 -> 128)
with T nodes per layer and Gumbel-softmax parent choices (temperature 1); Adam 1e-3, 1500 steps of
batch 64, as ``experiments/digits_mlp.py`` (hard sharing) so that the architectures compare.

Command::

  python -m mtlx.train --config experiments/digits_ltb.py --method ew pcgrad upgrad

Expected (measured, seed 0, EW only: ``--method ew --baselines none``): test accuracy
0.9555 / 0.9577 (left / right); ``experiments/digits_mlp.py`` (hard sharing) gives 0.9710 / 0.9621.

Wall time: 38 s for that EW command on the shared 2-core CPU machine (three jobs running);
the full command adds PCGrad and UPGrad and first the two single-task runs of Δm's base.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="ltb", model_kwargs={"hidden": (128, 128, 128)})


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
