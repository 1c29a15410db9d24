r"""Cityscapes: 7-class segmentation and depth with SegNet at 128 x 256 (MTAN's preprocessed set,
as in LibMTL and Nash-MTL).

Data: ``mtlx.data.load_cityscapes`` (manual download; the error message gives the steps).

Command::

  python -m mtlx.train --config experiments/cityscapes_segnet.py --method ew mgda upgrad

Expected: mIoU around 0.70-0.75 and pixel accuracy around 0.92-0.93 with EW after 200 epochs
(Nash-MTL's table); not measured here. Wall time: not measured; needs a GPU.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="cityscapes",
        dataset_kwargs={"num_classes": 7},
        model="segnet_mtl",
        model_kwargs={"tasks": {"segmentation": 7, "depth": 1}},
        optimizer="adam",
        learning_rate=1e-4,
        batch_size=8,
        eval_batch_size=16,
        num_steps=74_400,  # 200 epochs of 2975 images (372 steps each)
        steps_per_call=1,
        eval_every=3_720,
        log_every=372,
        checkpoint_every=3_720,
        baselines=None,
    )


SMOKE = {
    "image_shape": (32, 64, 3),
    "changes": {
        "model_kwargs": {"tasks": {"segmentation": 7, "depth": 1}, "filters": (4, 4, 4, 4, 4)}
    },
}
