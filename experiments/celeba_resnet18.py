r"""CelebA, 40 binary attributes, ResNet-18 trunk with 40 linear heads (Sener & Koltun, NeurIPS
2018, at 64 x 64).

Data: ``mtlx.data.load_celeba`` reads TFDS ``celeb_a`` (array_record, no TensorFlow); it fails
fast with the download / preparation command when the data is missing.

Command::

  python -m mtlx.train --config experiments/celeba_resnet18.py --method ew mgda uw_so

Expected: about 0.91 mean attribute accuracy (Sener & Koltun report 8-10 % mean error for their
methods); not measured here (no data on the build machine). Wall time: not measured; a GPU is
needed (T = 40 Gramian methods run 40 batched backward passes per step).
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="celeba",
        dataset_kwargs={"image_size": 64},
        model="resnet18_hps",
        model_kwargs={"num_classes": 2},
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=256,
        eval_batch_size=512,
        num_steps=30_000,  # ~48 epochs of 162,770 images
        steps_per_call=10,
        eval_every=3_000,
        log_every=100,
        checkpoint_every=3_000,
        chunk_size=10,  # bounds the live Jacobian rows of Gramian methods
        baselines=None,
    )


SMOKE = {
    "image_shape": (8, 8, 3),
    "tasks": 3,  # three attributes are enough to exercise the 40-head code path
    "changes": {"model_kwargs": {"num_classes": 2, "small_inputs": True}, "chunk_size": None},
}
