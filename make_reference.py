"""Reference statistics from an image folder such as ImageNet's, for evaluate_fid.py's REF.

    python make_reference.py imagenet/train imagenet256_ref.npz --image-size 256
    python evaluate_fid.py imagenet256_ref.npz samples.npz --metrics fid,sfid,is

Every PNG/JPEG anywhere under the folder (class subfolders or none), of any size, is cut to a square by ADM's
centre crop (guided-diffusion's ``center_crop_arr``, the preprocessing behind the ImageNet FID tables), and the
Inception pool and spatial statistics (FID, sFID) are written to one .npz. --features also keeps every image's pool
features for precision/recall (8 KB an image). Bad input ends in one line and exit code 2, with nothing written.
"""

import argparse
from pathlib import Path

from evaluation import EXTRACTORS, save_reference
from training.atomic import WriteError, remove_stale_outputs
from training.cli import OneLineParser, fail


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("folder", help="image folder, read at any depth")
    p.add_argument("out", type=Path, help="the statistics .npz to write")
    p.add_argument("--image-size", type=int, default=256, help="side of ADM's centre crop (256, 512)")
    p.add_argument("--features", action="store_true", help="also store the pool features, for precision/recall")
    p.add_argument("--feature-extractor", default="inception", help=f"one of: {', '.join(EXTRACTORS)}")
    p.add_argument("--weights", default=None, help="extractor weights; inception's default: hub cache, else download")
    p.add_argument("--batch-size", type=int, default=100, help="images per extractor call")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; default: cuda when available")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        remove_stale_outputs(args.out)  # what a run killed mid-write left
        count = save_reference(
            args.folder,
            args.out,
            args.image_size,
            args.feature_extractor,
            args.weights,
            args.batch_size,
            args.device,
            args.features,
        )
    except ValueError as err:
        fail("make_reference.py", err)
    except WriteError as err:  # a full disk
        fail("make_reference.py", err, 1)
    print(
        f"wrote {args.out}: {args.feature_extractor} statistics of {count} images, centre-cropped to "
        f"{args.image_size}×{args.image_size}"
    )


if __name__ == "__main__":
    main()
