r"""Yeast: 14 binary gene-function labels from 103 features, an MLP with 14 two-way heads.

Data: ``mtlx.data.load_yeast`` reads the Yeast multi-label benchmark (Elisseeff & Weston, NeurIPS
2001; 2,417 genes) from the CSV inside the ``river`` wheel (``pip install -e ".[yeast]"``; no
download at run time): a seeded 1,500 / 917 train / test split, features standardised with the
training statistics. Model: ``mlp_hps`` (103 -> 256 -> 256, 14 heads of 2 logits), Adam 1e-3,
batch 64, 1000 steps (about 43 epochs).

Command::

  python -m mtlx.train --config experiments/yeast_mlp.py --method ew rlw pcgrad mgda uw_so

(the CLI first trains the 14 single-task baselines that Δm compares against: the same MLP, data
and budget, ``scalarization`` with a one-hot weight).

Expected (seed 0, measured; mean test accuracy over the 14 labels, Δm against the single-task
baselines, whose mean accuracy is 0.7869; Hamming accuracy near 0.78-0.80 is the usual range for
Yeast):

  ======== ============= ======
  method   mean accuracy Δm (%)
  ======== ============= ======
  ew       0.7826        -0.53
  rlw      0.7860        -0.08
  pcgrad   0.7844        -0.32
  mgda     0.7923        +0.71
  uw_so    0.7339        -7.32
  ======== ============= ======

Wall time: 4 minutes on the shared 2-core CPU machine: 14 single-task runs (about 10 s each),
then 11-22 s per method (``--baselines FILE`` with a file from ``--save-baselines FILE`` skips
the single-task runs).
"""

from mtlx.training import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(
        dataset="yeast",
        model="mlp_hps",
        model_kwargs={"hidden": (256, 256)},
        optimizer="adam",
        learning_rate=1e-3,
        batch_size=64,
        num_steps=1000,
        steps_per_call=50,
    )


# Tiny settings for tests/experiments/test_configs_smoke.py (synthetic data of this shape).
SMOKE = {"image_shape": (103,), "tasks": 3, "changes": {}}
