r"""NYUv2: 13-class segmentation, depth and surface normals with SegNet (Liu et al., MTAN, CVPR
2019; the LibMTL / Nash-MTL setup at 288 x 384, 795 train / 654 test images).

Data: ``mtlx.data.load_nyuv2`` (manual download of the MTAN preprocessed set; the error message
gives the steps). The three heads have different output sizes (no task axis); they are still
task-specific (own gradients, outside the Gramian; see ``mtlx.training.step.multitask_jacobian``).

Command::

  python -m mtlx.train --config experiments/nyuv2_segnet.py --method ew mgda pcgrad

Expected: with EW after 200 epochs the literature reports mIoU around 0.38-0.40, pixel accuracy
around 0.65, absolute depth error around 0.55 and mean normal angle around 28-30 degrees (MTAN /
Nash-MTL tables); not measured here. Wall time: not measured; needs a GPU.
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="nyuv2",
        model="segnet_mtl",
        model_kwargs={"tasks": {"segmentation": 13, "depth": 1, "normal": 3}},
        optimizer="adam",
        learning_rate=1e-4,
        batch_size=2,
        eval_batch_size=8,
        num_steps=79_400,  # 200 epochs of 795 images (397 steps each)
        steps_per_call=1,
        eval_every=3_970,
        log_every=397,
        checkpoint_every=3_970,
        baselines=None,
    )


SMOKE = {
    "image_shape": (32, 32, 3),
    "changes": {
        "model_kwargs": {
            "tasks": {"segmentation": 13, "depth": 1, "normal": 3},
            "filters": (4, 4, 4, 4, 4),
        }
    },
}
