"""`make reproduce-small`: the paper's convergence comparison at CPU scale on the embedded Fashion-MNIST default.

ViT-T/4 in pixel space, the laptop recipe (configs/fashion_vit-t4_x0_min_snr.toml) at batch 32 for 3000 steps,
with only the target and the weighting changed between runs:
- x0-prediction with const, snr, max_snr (γ = 1) and min_snr (γ = 5); const and min_snr with two seeds;
- ε-prediction with snr (plain ε-MSE) and min_snr (γ = 5).
Each run's checkpoints are scored by FD-fashion (tools/convergence.py) as soon as the run is trained, and the
speed-ups are taken against x0 + const, the paper's baseline for the 3.4× claim. Re-running skips finished runs
and evaluated checkpoints.

By default it writes to a fresh directory (results/reproduce-small) and, after each run, prints its scores beside
the committed ones in results/small/curves.csv; ``--out results/small`` resumes into the committed study instead.
"""

import argparse
from pathlib import Path

from studies.common import Study, compare_with_committed
from tools import convergence

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "small"
CONFIG = ROOT / "configs" / "fashion_vit-t4_x0_min_snr.toml"

# name, prediction, weighting, γ, seed; the main pair (x0: const against min_snr) comes first.
RUNS = [
    ("x0-const-s0", "x0", "const", 5.0, 0),
    ("x0-min_snr-s0", "x0", "min_snr", 5.0, 0),
    ("x0-const-s1", "x0", "const", 5.0, 1),
    ("x0-min_snr-s1", "x0", "min_snr", 5.0, 1),
    ("x0-snr-s0", "x0", "snr", 5.0, 0),
    ("x0-max_snr-s0", "x0", "max_snr", 1.0, 0),
    ("eps-snr-s0", "eps", "snr", 5.0, 0),
    ("eps-min_snr-s0", "eps", "min_snr", 5.0, 0),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results/reproduce-small"),
        help="the study directory; results/small continues the committed one (default: %(default)s)",
    )
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=500, help="samples per FD-fashion evaluation")
    p.add_argument("--steps", type=int, default=10, help="Heun steps per evaluation sample (NFE = 2·steps − 1)")
    p.add_argument("--only", help="comma-separated run names (default: all)")
    args = p.parse_args()
    runs = [r for r in RUNS if args.only is None or r[0] in args.only.split(",")]
    study = Study(args.out, "reproduce_small")
    scoring = ["--out", str(args.out), "--num-samples", str(args.num_samples), "--steps", str(args.steps)]
    title = ["--title", "Fashion-MNIST, ViT-T/4: FD-fashion of the EMA weights"]
    for name, prediction, weighting, gamma, seed in runs:
        flags = ["--prediction", prediction, "--weighting", weighting, "--snr-gamma", str(gamma), "--seed", str(seed)]
        flags += ["--max-steps", str(args.max_steps), "--global-batch-size", str(args.batch_size)]
        flags += ["--ckpt-every", str(args.ckpt_every), "--keep-checkpoints", "0"]
        study.train(name, CONFIG, flags, args.max_steps, log=False)
        # score each run as soon as it is trained, so the first numbers come after one run, not after all eight
        convergence.main([f"{name}={study.runs / name}", *scoring, *title])
        if args.out.resolve() != COMMITTED.resolve():
            print(compare_with_committed(args.out / "curves.csv", COMMITTED / "curves.csv", "fd_fashion"))
    convergence.main([*(f"{name}={study.runs / name}" for name, *_ in runs), *scoring, *title])  # all runs' plot


if __name__ == "__main__":
    main()
