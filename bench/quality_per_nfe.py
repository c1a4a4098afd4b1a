"""Sample quality against model evaluations: FD-fashion per sampler at 10, 20, 50 and 250 NFE, on the embedded default.

    python bench/quality_per_nfe.py --ckpt results/demo/run/checkpoints/0002000.pt

The steps per sampler are chosen to match the NFE budget: DDPM, DDIM and DPM-Solver++(2M) spend one evaluation
per step, EDM Heun 2·steps − 1. Every run uses the same seeds and labels (sample i: seed + i, label i mod 10). It
prints FD-fashion per (sampler, NFE) and the sampler that comes within 5% of DDPM-250's FD with the fewest NFE.

Each score is appended to OUT/fd.jsonl and reused when asked again, so an interrupted run resumes, and several
processes can share the settings (``--samplers``, ``--nfe``); ``--report`` then prints the table of every cached
score for the checkpoint and computes nothing.
"""

import argparse
import json
import sys
from pathlib import Path

from tools.convergence import Scoring, score_checkpoint

ROOT = Path(__file__).resolve().parents[1]

SAMPLERS = ("ddpm", "ddim", "heun", "dpm++")


def steps_for(sampler: str, nfe: int) -> int:
    """The step count that spends ``nfe`` model evaluations (Heun: the largest with 2·steps − 1 ≤ nfe)."""
    return (nfe + 1) // 2 if sampler == "heun" else nfe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated subset of " + ",".join(SAMPLERS))
    p.add_argument("--nfe", default="10,20,50,250")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--weights", choices=("ema", "raw"), default="ema")
    p.add_argument("--out", type=Path, default=Path("results/quality_per_nfe"))
    p.add_argument("--report", action="store_true", help="only print the table of the cached scores (OUT/fd.jsonl)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    budgets = [int(n) for n in args.nfe.split(",")]
    samplers = args.samplers.split(",")
    if unknown := set(samplers) - set(SAMPLERS):
        sys.exit(f"error: unknown sampler(s) {sorted(unknown)}; choose from {', '.join(SAMPLERS)}")
    cache = args.out / "fd.jsonl"
    key = {"ckpt": str(args.ckpt.resolve()), "num_samples": args.num_samples, "weights": args.weights}
    fd = {}
    for line in cache.read_text().splitlines() if cache.exists() else []:
        row = json.loads(line)
        if all(row[k] == v for k, v in key.items()):
            fd[row["sampler"], row["nfe"]] = row["fd"]
    for sampler in [] if args.report else samplers:
        for nfe in budgets:
            if (sampler, nfe) in fd:
                continue
            settings = Scoring(
                num_samples=args.num_samples,
                sampler=sampler,
                steps=steps_for(sampler, nfe),
                weights=args.weights,
                device="cpu",
            )
            fd[sampler, nfe] = score_checkpoint(args.ckpt, settings, "fd_fashion", args.out / f"work-{sampler}-{nfe}")
            with cache.open("a") as f:
                f.write(json.dumps({**key, "sampler": sampler, "nfe": nfe, "fd": fd[sampler, nfe]}) + "\n")
            print(
                f"{sampler:6s} NFE {nfe:4d} (steps {steps_for(sampler, nfe):3d}): FD-fashion {fd[sampler, nfe]:.4g}",
                flush=True,
            )
    print(f"\n{'NFE':>6s} " + " ".join(f"{s:>9s}" for s in SAMPLERS))
    for nfe in sorted({n for _, n in fd}):
        print(f"{nfe:6d} " + " ".join(f"{fd[s, nfe]:9.4g}" if (s, nfe) in fd else f"{'-':>9s}" for s in SAMPLERS))
    reference = fd.get(("ddpm", 250))
    if reference is not None:
        close = sorted((nfe, v, s) for (s, nfe), v in fd.items() if v <= 1.05 * reference)  # fewest NFE, then FD
        nfe, _, sampler = close[0]
        print(f"fewest NFE within 5% of DDPM-250 ({reference:.4g}): {sampler} at {nfe} NFE ({fd[sampler, nfe]:.4g})")


if __name__ == "__main__":
    main()
