r"""Multi-Digits with MMoE (Ma et al., KDD 2018): ``mtlx.models.mmoe`` on the MLP backbone.

Two tasks (left and right digit of an 8 x 16 pair), 4 MLP experts (128 -> 128 -> 128), one softmax
gate per task on the flattened image; Adam 1e-3, 1500 steps of batch 64, as
``experiments/digits_mlp.py`` (hard sharing) so that the architectures compare.

Command::

  python -m mtlx.train --config experiments/digits_mmoe.py --method ew pcgrad upgrad

Expected (measured, seed 0, EW only: ``--method ew --baselines none``): test accuracy
0.9733 / 0.9822 (left / right); ``experiments/digits_mlp.py`` (hard sharing) gives 0.9710 / 0.9621.

Wall time: 23 s for that EW command on the shared 2-core CPU machine (three jobs running);
the full command adds PCGrad and UPGrad and first the two single-task runs of Δm's base.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="mmoe", model_kwargs={"hidden": (128, 128), "num_experts": 4})


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
