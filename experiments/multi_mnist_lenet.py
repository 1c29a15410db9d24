r"""Multi-MNIST with MultiLeNet (Sener & Koltun, "Multi-Task Learning as Multi-Objective
Optimization", NeurIPS 2018): classify the top-left and bottom-right of two overlaid digits.

Data: ``mtlx.data.load_multi_mnist`` builds the set from TFDS ``mnist`` (36 x 36 images); it fails
fast with the download command when the source is missing. Variant:
``dataset_kwargs={"variant": "fashion"}`` gives Multi-Fashion+MNIST.

Command::

  python -m mtlx.train --config experiments/multi_mnist_lenet.py --method ew mgda pcgrad upgrad

Expected: roughly 0.90-0.95 test accuracy per task (the range reported for Multi-MNIST with this
network in the MGDA / Nash-MTL literature); not measured here (no network on the build machine).
Wall time: not measured; the LeNet step is convolution-bound on CPU (tens of ms per batch of 256
with a free core), so use a GPU for the full 100 epochs.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="multi_mnist",
        model="lenet_hps",
        model_kwargs={},
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=256,
        eval_batch_size=1000,
        num_steps=20_000,  # ~85 epochs of 60k examples
        steps_per_call=50,
        eval_every=2_000,
        log_every=200,
        checkpoint_every=2_000,
        baselines=None,
    )


SMOKE = {"image_shape": (36, 36, 1), "changes": {}}
