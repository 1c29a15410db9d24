"""Writes a manually downloaded dataset as an array_record TFDS dataset.

python -m mtlx.data nyuv2 --manual_dir DIR [--data_dir TFDS_DIR]
python -m mtlx.data cityscapes --manual_dir DIR [--num_classes 7|19] [--data_dir TFDS_DIR]
"""

from __future__ import annotations

import argparse

from mtlx.data import _tfds
from mtlx.data.cityscapes import NUM_CLASSES, prepare_cityscapes
from mtlx.data.nyuv2 import prepare_nyuv2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mtlx.data", description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=("nyuv2", "cityscapes"))
    parser.add_argument("--manual_dir", required=True, help="the unzipped MTAN download")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: TFDS's)")
    parser.add_argument(
        "--num_classes",
        type=int,
        default=7,
        choices=NUM_CLASSES,
        help="Cityscapes segmentation classes",
    )
    args = parser.parse_args(argv)
    try:
        if args.dataset == "nyuv2":
            path = prepare_nyuv2(args.manual_dir, data_dir=args.data_dir)
        else:
            path = prepare_cityscapes(
                args.manual_dir, num_classes=args.num_classes, data_dir=args.data_dir
            )
    except _tfds.DatasetNotFoundError as e:
        raise SystemExit(str(e)) from None
    print(path)


if __name__ == "__main__":
    main()
