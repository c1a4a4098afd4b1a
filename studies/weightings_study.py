"""`make reproduce-weightings`: the weighting and timestep-density zoo at equal budget on the embedded default.

    OMP_NUM_THREADS=1 python studies/weightings_study.py --worker 0 &   # two workers, one per core
    OMP_NUM_THREADS=1 python studies/weightings_study.py --worker 1 &
    python studies/weightings_study.py --report                         # plots and tables only

The protocol, fixed before anything ran:
- **Model and recipe.** The demo's: DiT-T/4 on Fashion-MNIST pixels, x0-prediction, cosine schedule, batch 32,
  AdamW lr 1e-3 with 100 warm-up steps, EMA 0.995, label drop 0.1 (configs/fashion_dit-t4_x0_const.toml), 2000
  steps, checkpoints every 250. Between arms only the loss changes (target, weighting, density, uncertainty).
- **Arms** (ARMS below): x0 + const (the paper's baseline), x0 + Min-SNR-5 (the paper's method), ε + Min-SNR-5,
  x0 + edm (σ_d 0.5), x0 + debiased, x0 + sigmoid (b = −3), x0 + Min-SNR-5 with the Laplace density (μ 0, b 0.5),
  x0 + const with the logit-normal density (0, 1), x0 + Min-SNR-5 with EDM2's learned uncertainty. Densities use
  the papers' reading (resampled: the weight is not divided by the density ratio).
- **Seeds.** 0 and 1 for every arm; all seed-0 runs come first.
- **Scores** (every run, same samples and noise at every checkpoint):
  - FD-fashion of 500 EMA samples, EDM Heun-10 (19 NFE), no guidance, sample seed 0, against the 10K test
    images, at every checkpoint from step 500 (``curves.csv``);
  - the unweighted x0-MSE at 14 fixed t on 1000 test images with one fixed noise draw, every 500 steps
    (``denoiser.csv``; the per-band heat map against Min-SNR-5);
  - the noise floor: the final checkpoints of x0-const-s0 and x0-min_snr-s0 sampled again with sample seeds 1
    and 2 (metric ``fd_fashion@seedK``).
- **Read-out.** Per arm and seed: the first checkpoint at or below Min-SNR-5's best seed-mean FD, and at or below
  const's; speed-up = the reference arm's steps to its own best over the arm's steps. Goal: an arm that reaches
  Min-SNR-5's best at least 1.2× sooner.

By default everything goes to a fresh directory (results/reproduce-weightings), and ``--report`` ends by printing
the new scores beside the committed ones in results/weightings/curves.csv; ``--out results/weightings`` resumes
into the committed study instead.

Every score is appended as soon as it exists and skipped when a re-run finds it, so the study resumes anywhere
(and on a new machine from the committed CSVs alone: a run whose scores are all in is not retrained); runs resume
from their newest checkpoint. Two workers split the runs alternately.
"""

import argparse
import dataclasses
from pathlib import Path

from studies.common import (
    Study,
    compare_with_committed,
    finish_axes,
    fmt,
    markdown,
    plot_seed_means,
    seed_table,
    steps_to,
)
from tools.convergence import Scoring, read_curves
from tools.curves import arm_of
from tools.denoiser_error import heatmap, read_rows

ROOT = Path(__file__).resolve().parents[1]

COMMITTED = ROOT / "results" / "weightings"
OUT = ROOT / "results" / "reproduce-weightings"  # --out
CONFIG = ROOT / "configs" / "fashion_dit-t4_x0_const.toml"
MIN_SNR = "--weighting min_snr --snr-gamma 5"
ARMS = {  # each arm's train.py flags
    arm: flags.split()
    for arm, flags in {
        "x0-const": "--weighting const",
        "x0-min_snr": MIN_SNR,
        "eps-min_snr": f"--prediction eps {MIN_SNR}",
        "x0-edm": "--weighting edm --sigma-data 0.5",
        "x0-debiased": "--weighting debiased",
        "x0-sigmoid": "--weighting sigmoid --sigmoid-bias -3",
        "x0-min_snr-laplace": f"{MIN_SNR} --timestep-sampling laplace --laplace 0 0.5",
        "x0-const-logit_normal": "--weighting const --timestep-sampling logit_normal --logit-normal 0 1",
        "x0-min_snr-uncertainty": f"{MIN_SNR} --learned-uncertainty",
    }.items()
}
SEEDS = (0, 1)
STEPS = 2000
BASE = ["--max-steps", str(STEPS), "--ckpt-every", "250", "--keep-checkpoints", "0", "--num-workers", "0"]
FD_STEPS = tuple(range(500, STEPS + 1, 250))
DENOISER_EVERY = 500
HEUN = Scoring(num_samples=500, sampler="heun", steps=10)


def plan() -> list[list[str]]:
    """Each worker's runs, in order: every arm's seed 0 before any seed 1, dealt alternately."""
    order = [f"{arm}-s{seed}" for seed in SEEDS for arm in ARMS]
    return [order[0::2], order[1::2]]


def study() -> Study:
    return Study(OUT, "weightings_study")


def finished(name: str) -> bool:
    """All of a run's scores are in the CSVs (then it needs no checkpoints, so a new machine skips it)."""
    fd_done = all((name, s) in study().scored("fd_fashion") for s in FD_STEPS)
    denoised = {int(r["step"]) for r in read_rows(OUT / "denoiser.csv") if r["run"] == name}
    return fd_done and set(range(DENOISER_EVERY, STEPS + 1, DENOISER_EVERY)) <= denoised


def train(name: str) -> Path:
    arm, seed = name.rsplit("-s", 1)
    return study().train(name, CONFIG, [*BASE, *ARMS[arm], "--seed", seed], STEPS)


def fd(run: Path, step: int, scoring: Scoring = HEUN, suffix: str = "") -> None:
    """FD-fashion of one checkpoint's samples into curves.csv as metric fd_fashion<suffix>."""
    study().score(run, step, scoring, ("fd_fashion",), suffix)


def noise_floor(name: str) -> None:
    for k in (1, 2):
        fd(OUT / "runs" / name, STEPS, dataclasses.replace(HEUN, seed=k * 100_000), f"@seed{k}")


def work(worker: int) -> None:
    (OUT / "runs").mkdir(parents=True, exist_ok=True)
    for name in plan()[worker]:
        floor_run = name in ("x0-const-s0", "x0-min_snr-s0")
        if finished(name) and (not floor_run or (name, STEPS) in study().scored("fd_fashion@seed2")):
            continue
        run = train(name)
        study().denoise(run, DENOISER_EVERY)
        for step in FD_STEPS:
            fd(run, step)
        if floor_run:
            noise_floor(name)


def speedup_table(rows: list[dict]) -> str:
    """Steps to Min-SNR-5's and const's best seed-mean FD, per seed, with the speed-up over the reference arm."""
    table = seed_table(rows, "fd_fashion")
    runs: dict[str, dict[int, list[tuple[int, float]]]] = {}
    for r in rows:
        if r["metric"] == "fd_fashion":
            arm, seed = r["run"].rsplit("-s", 1)
            runs.setdefault(arm, {}).setdefault(int(seed), []).append((r["step"], r["value"]))
    header = ["arm", f"final FD ({STEPS})", "best FD (step)"]
    targets = {}
    for ref in ("x0-min_snr", "x0-const"):
        if ref in table:
            best_step, best = min(((s, sum(v) / len(v)) for s, v in table[ref].items()), key=lambda p: p[1])
            targets[ref] = (best, best_step)
            header.append(f"steps to {ref}'s best {best:.1f} (step {best_step}), per seed; speed-up")
    lines = []
    for arm in (a for a in ARMS if a in runs):
        seeds, cells = runs[arm], table[arm]
        final = fmt(cells[STEPS]) if STEPS in cells else ""
        best_step = min(cells, key=lambda s: sum(cells[s]) / len(cells[s]))
        line = [arm, final, f"{sum(cells[best_step]) / len(cells[best_step]):.1f} ({best_step})"]
        for best, ref_step in targets.values():
            per_seed = [sorted(points) for _, points in sorted(seeds.items())]
            reached = [steps_to(points, best) for points in per_seed]
            pairs = zip(reached, per_seed, strict=True)
            text = ", ".join(str(s) if s else f"not by {points[-1][0]}" for s, points in pairs)
            ratios = [f"{ref_step / s:.2f}×" for s in reached if s]
            line.append(text + ("; " + ", ".join(ratios) if ratios else ""))
        lines.append(line)
    return markdown(header, lines)


def report() -> None:
    """curves.png, heatmap.png and tables.md from the CSVs alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curves(OUT / "curves.csv")
    table = seed_table(rows, "fd_fashion")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for arm in (a for a in ARMS if a in table):
        style = "-" if arm in ("x0-const", "x0-min_snr") else "--"
        plot_seed_means(ax, table[arm], arm, style, markersize=3, dot_size=6)
    ax.set_ylabel("FD-fashion (500 samples, Heun-10)")
    ax.set_title("DiT-T/4 on Fashion-MNIST: seed mean (dots: seeds)", fontsize=10)
    finish_axes(ax, 7, ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png")
    plt.close(fig)

    denoiser = read_rows(OUT / "denoiser.csv")
    arms = [a for a in ARMS if any(arm_of(r["run"]) == a for r in denoiser)]
    if "x0-min_snr" in arms:
        arms.remove("x0-min_snr")
        heatmap(
            denoiser,
            ["x0-min_snr", *arms],
            "ema",
            OUT / "heatmap.png",
            "unweighted x0-MSE on 1000 test images, fixed noise: each arm over x0 + Min-SNR-5",
        )

    parts = ["**Steps to a threshold** (first checkpoint at or below it)\n\n" + speedup_table(rows)]
    steps = sorted({s for cells in table.values() for s in cells})
    lines = [[arm, *(fmt(table[arm][s]) if s in table[arm] else "" for s in steps)] for arm in ARMS if arm in table]
    parts.append("**FD-fashion**, seed mean (per seed)\n\n" + markdown(["arm", *map(str, steps)], lines))
    floor = [r for r in rows if r["metric"].startswith("fd_fashion@seed")]
    if floor:
        base = {(r["run"], r["step"]): r["value"] for r in rows if r["metric"] == "fd_fashion"}
        lines = [
            [r["run"], str(r["step"]), r["metric"], f"{r['value']:.2f}", f"{base[r['run'], r['step']]:.2f}"]
            for r in floor
        ]
        parts.append(
            "**noise floor** (the same checkpoint, other sample seeds)\n\n"
            + markdown(["run", "step", "metric", "value", "sample seed 0"], lines)
        )
    (OUT / "tables.md").write_text("\n\n".join(parts) + "\n")
    print((OUT / "tables.md").read_text())
    if OUT.resolve() != COMMITTED.resolve():
        print(compare_with_committed(OUT / "curves.csv", COMMITTED / "curves.csv", "fd_fashion"))


def main() -> None:
    global OUT
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=int, choices=(0, 1), help="which half of the runs to train and score")
    p.add_argument("--report", action="store_true", help="draw the plots and tables from the study's CSVs")
    p.add_argument(
        "--out",
        type=Path,
        default=OUT,
        help="the study directory; results/weightings continues the committed one (default: %(default)s)",
    )
    args = p.parse_args()
    OUT = args.out
    if args.worker is not None:
        work(args.worker)
    if args.report:
        report()


if __name__ == "__main__":
    main()
