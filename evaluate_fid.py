"""ADM-protocol evaluation of a sample batch against a reference: FID, sFID, Inception Score, precision and recall.

    python evaluate_fid.py VIRTUAL_imagenet256_labeled.npz samples.npz      # ADM's order: reference first
    python evaluate_fid.py REF SAMPLE --metrics fid,is --json result.json

REF: ADM's reference batch (its stored statistics give FID and sFID, its images precision/recall), any sample
.npz, a folder of PNG/JPEG images, a statistics file written by --save-ref-stats, or fashion-test (the Fashion-MNIST
test split, for --feature-extractor fashion). SAMPLE: an .npz with uint8
NHWC images in arr_0, or an image folder. Prints one summary line; bad input ends in one line and exit code 2.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

from evaluation import EXTRACTORS, evaluate
from training.atomic import remove_stale_outputs, write_text_atomic
from training.cli import OneLineParser, fail

LABELS = {"fid": "FID", "sfid": "sFID", "is": "IS"}


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("ref", metavar="REF", help="reference: ADM .npz, sample .npz, image folder or statistics file")
    p.add_argument("sample", metavar="SAMPLE", help="samples: .npz (arr_0 uint8 [N, H, W, C]) or image folder")
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated, from fid, sfid, is, pr (precision and recall); default: all that the "
        "extractor gives. With an extractor X other than inception they are reported as fd_X, "
        "sfd_X, is_X, precision_X, recall_X",
    )
    p.add_argument("--feature-extractor", default="inception", help=f"one of: {', '.join(EXTRACTORS)}")
    p.add_argument("--weights", default=None, help="extractor weights; inception's default: hub cache, else download")
    p.add_argument("--batch-size", type=int, default=100, help="images per extractor call")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ...; default: cuda when available")
    p.add_argument("--json", default=None, metavar="OUT", help="also write every metric and the settings here")
    p.add_argument(
        "--save-ref-stats",
        default=None,
        metavar="PATH",
        help="write REF's statistics (and pool features, for pr) to this .npz, to serve as REF",
    )
    return p.parse_args(argv)


def summary(result: dict) -> str:
    """'FID 3.9426 sFID 6.1404 IS 215.84 precision 0.8265 recall 0.5309 (50000 samples vs ref.npz)'."""
    values = " ".join(
        f"{LABELS.get(name, name)} {value:.2f}" if name.startswith("is") else f"{LABELS.get(name, name)} {value:.4f}"
        for name, value in result["metrics"].items()
    )
    return f"{values} ({result['sample']['count']} samples vs {Path(result['reference']['path']).name})"


def show_warning(message, *_, **__) -> None:
    print(f"evaluate_fid.py: warning: {message}", file=sys.stderr)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        if args.json is not None and not Path(args.json).parent.is_dir():
            raise ValueError(f"--json {args.json}: its directory does not exist")
        remove_stale_outputs(args.json, args.save_ref_stats)  # what a run killed mid-write left
        with warnings.catch_warnings():
            warnings.showwarning = show_warning  # one line each
            result = evaluate(
                args.ref,
                args.sample,
                args.metrics,
                args.feature_extractor,
                args.weights,
                args.batch_size,
                args.device,
                args.save_ref_stats,
            )
    except ValueError as err:
        fail("evaluate_fid.py", err)
    print(summary(result))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
