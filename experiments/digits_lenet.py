r"""Multi-Digits with Sener & Koltun's MultiLeNet (offline, CPU).

The default dataset with the Multi-MNIST network (:func:`mtlx.models.lenet_hps`, which resizes
the 8 x 16 pairs to 28 x 28 inside). Adam 1e-3, 600 steps of batch 64.

Command::

  python -m mtlx.train --config experiments/digits_lenet.py --method ew pcgrad mgda

Expected: about 0.95 test accuracy per task (measured with seed 0: 0.94-0.95 for EW and PCGrad). Wall time: the LeNet step is convolution-bound on CPU: 70-200 ms per step on the
shared 2-core machine, so 2-4 minutes per method (use the MLP default for quick runs).
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        model="lenet_hps",
        model_kwargs={},
        num_steps=600,
        steps_per_call=10,
    )


SMOKE = {"image_shape": (8, 16, 1), "changes": {}}
