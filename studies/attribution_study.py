"""The convergence-attribution study: why x0 + Min-SNR-5 trails x0 + const at CPU scale, and what flips it.

    OMP_NUM_THREADS=1 python studies/attribution_study.py --worker 0 &   # two workers, one per core
    OMP_NUM_THREADS=1 python studies/attribution_study.py --worker 1 &
    python studies/attribution_study.py --report                         # plots and tables only

The protocol, fixed before anything ran:
- **Model and data.** ViT-T/4 on Fashion-MNIST pixels, x0-prediction, cosine schedule, batch 32, EMA 0.995,
  checkpoints every 250 steps, 1500 steps (the base pair: 3000, in a second stage). Each factor changes both arms
  (const and Min-SNR-5) alike, with nothing else changed:
  - ``base``: the laptop recipe (configs/fashion_vit-t4_x0_min_snr.toml: AdamW lr 3e-4, β (0.9, 0.999), no
    weight decay, 100 warm-up steps, label drop 0.1);
  - ``norm``: the same with ``--data-norm channel`` (pixels standardised to mean 0, std 1);
  - ``paper``: the paper's optimiser recipe: lr 1e-4, β (0.99, 0.99), weight decay 0.03, no warm-up, label
    drop 0.15;
  - ``γ``: Min-SNR-γ with γ = 1, 2 and 20 (γ = 5 is the base arm);
  - training length: the base pair continued to 3000 steps.
- **Seeds.** 0 and 1 for every arm.
- **Scores** (every run, same samples and seeds at every checkpoint):
  - the denoiser's unweighted x0-MSE at 14 fixed t on the first 1000 test images with one fixed noise draw, at
    every 500 steps (``denoiser.csv``; tools/denoiser_error.py);
  - FD-fashion (the classifier's pooled 128-d features: global shape) and sFD-fashion (its 7×8×8 spatial
    features: local detail, the analogue of sFID) of 1000 EMA samples, EDM Heun-10 (19 NFE), no guidance,
    sample seed 0, at steps 500, 1000, 1500 (and 2000-3000 for the long runs), against the 10K test images
    (``curves.csv``);
  - the evaluation sampler: DDPM-100 (β variance) at step 1500 of the base runs, as metrics
    ``fd_fashion@ddpm100`` and ``sfd_fashion@ddpm100``;
  - noise-band attribution at step 1500 of the base pair, per seed: Heun-10 with one model above σ = 1 (SNR < 1)
    and the other below, both ways (``attribution.csv``);
  - the noise floor: the same two checkpoints (base, seed 0, step 1500) sampled with seeds 1 and 2 as well
    (metrics ``fd_fashion@seedK``), and 1000 real training images against the test set.

Every score is appended as soon as it exists and skipped when a re-run finds it, so the study resumes anywhere;
runs resume from their newest checkpoint. Two workers split the runs (worker 0 the const arms, worker 1 the
Min-SNR arms), each doing train -> score for one run before the next.
"""

import argparse
import csv
import os
import time
from pathlib import Path

from studies.common import Study, finish_axes, fmt, markdown, plot_seed_means, seed_table
from tools.convergence import Scoring, append_rows, read_curves, score_samples
from tools.curves import arm_of
from tools.denoiser_error import arm_means, heatmap, read_rows
from training.checkpoint import checkpoint_path

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "results" / "attribution"
CONFIG = ROOT / "configs" / "fashion_vit-t4_x0_min_snr.toml"
BASE = ["--global-batch-size", "32", "--ckpt-every", "250", "--keep-checkpoints", "0", "--num-workers", "0"]
RECIPES = {
    "": [],
    "-norm": ["--data-norm", "channel"],
    "-paper": "--lr 1e-4 --adam-betas 0.99 0.99 --weight-decay 0.03 --warmup-steps 0 --class-dropout 0.15".split(),
}
STAGE_STEPS = {1: 1500, 2: 3000}
FD_STEPS = (500, 1000, 1500, 2000, 2500, 3000)
NUM_SAMPLES = 1000
SWITCH_SIGMA = 1.0
STUDY = Study(OUT, "attribution_study")
ATTRIBUTION_FIELDS = ["high", "low", "step", "switch_sigma", "fd_fashion", "sfd_fashion"]  # attribution.csv


def run_flags(name: str) -> list[str]:
    """train.py flags of a run named x0-<weighting>[_g<γ>][<recipe>]-s<seed>."""
    body, seed = name.rsplit("-s", 1)
    recipe = next(r for r in sorted(RECIPES, key=len, reverse=True) if body.endswith(r))
    arm = body[: len(body) - len(recipe)]
    weighting = arm.removeprefix("x0-")
    gamma = "5"
    if "_g" in weighting:
        weighting, gamma = weighting.rsplit("_g", 1)
    return ["--weighting", weighting, "--snr-gamma", gamma, "--seed", seed, *RECIPES[recipe]]


def plan(stage: int) -> list[list[str]]:
    """Each worker's runs, in order (worker 0: const arms; worker 1: Min-SNR arms)."""
    if stage == 2:
        return [["x0-const-s0", "x0-const-s1"], ["x0-min_snr-s0", "x0-min_snr-s1"]]
    order = [f"{arm}{recipe}-s{seed}" for recipe in RECIPES for seed in (0, 1) for arm in ("x0-const", "x0-min_snr")]
    order += [f"x0-min_snr_g{gamma}-s{seed}" for seed in (0, 1) for gamma in (1, 20, 2)]
    return [order[0::2], order[1::2]]


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(30)


def train(name: str, steps: int) -> Path:
    return STUDY.train(name, CONFIG, [*BASE, *run_flags(name), "--max-steps", str(steps)], steps)


def scored(metric: str) -> set[tuple[str, int]]:
    return STUDY.scored(metric)


def fd(run: Path, step: int, scoring: Scoring, suffix: str = "", extra: tuple[str, ...] = ()) -> None:
    """FD- and sFD-fashion of one checkpoint into curves.csv, as metrics fd_fashion<suffix> and sfd_fashion<suffix>."""
    STUDY.score(run, step, scoring, ("sfd_fashion", "fd_fashion"), suffix, extra)  # fd last: it marks the pair done


def attribution(seed: int, high: str, low: str, step: int = 1500) -> None:
    """Heun-10 with ``high`` where σ > SWITCH_SIGMA and ``low`` below it, into attribution.csv."""
    path = OUT / "attribution.csv"
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    if any(r["high"] == f"{high}-s{seed}" and r["low"] == f"{low}-s{seed}" for r in rows):
        return
    runs = OUT / "runs"
    low_ckpt = checkpoint_path(runs / f"{low}-s{seed}" / "checkpoints", step)
    work = OUT / f"work-{os.getpid()}"
    work.mkdir(exist_ok=True)
    high_ckpt = checkpoint_path(runs / f"{high}-s{seed}" / "checkpoints", step)
    heun = Scoring(num_samples=NUM_SAMPLES, sampler="heun", steps=10)
    switch = ("--low-ckpt", str(low_ckpt), "--switch-sigma", str(SWITCH_SIGMA))
    values = score_samples(high_ckpt, heun, "fid,sfid", work, switch)
    work.rmdir()
    row = {"high": f"{high}-s{seed}", "low": f"{low}-s{seed}", "step": step, "switch_sigma": SWITCH_SIGMA}
    row |= {metric: f"{values[metric]:.6g}" for metric in ("fd_fashion", "sfd_fashion")}
    append_rows(path, ATTRIBUTION_FIELDS, [row])
    print(f"attribution seed {seed}: {high} above σ={SWITCH_SIGMA}, {low} below: FD {values['fd_fashion']:.4g}")


def extras(worker: int) -> None:
    """The scoring-only factors on the base pair: attribution, noise floor, and the DDPM-100 sampler."""
    arm = ("x0-const", "x0-min_snr")[worker]
    runs = OUT / "runs"
    for name in ("x0-const", "x0-min_snr"):  # the other worker trains the other arm
        wait_for(checkpoint_path(runs / f"{name}-s{worker}" / "checkpoints", 1500))
    attribution(worker, "x0-const", "x0-min_snr")
    attribution(worker, "x0-min_snr", "x0-const")
    for k in (1, 2):
        fd(
            runs / f"{arm}-s0",
            1500,
            Scoring(num_samples=NUM_SAMPLES, sampler="heun", steps=10, seed=k * 100_000),
            f"@seed{k}",
        )
    if worker == 0:
        STUDY.real_floor(NUM_SAMPLES)
    for seed in (0, 1):
        fd(runs / f"{arm}-s{seed}", 1500, Scoring(num_samples=NUM_SAMPLES, sampler="ddpm", steps=100), "@ddpm100")


def work(worker: int, stage: int) -> None:
    (OUT / "runs").mkdir(parents=True, exist_ok=True)
    heun = Scoring(num_samples=NUM_SAMPLES, sampler="heun", steps=10)
    steps = STAGE_STEPS[stage]
    for i, name in enumerate(plan(stage)[worker]):
        run = train(name, steps)
        STUDY.denoise(run, 500)
        for step in (s for s in FD_STEPS if s <= steps):
            fd(run, step, heun)
        if stage == 1 and i == 1:  # after both seeds of the base pair: the scoring-only factors
            extras(worker)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=int, choices=(0, 1), help="which half of the runs to train and score")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1, help="1: all arms to 1500; 2: base pair to 3000")
    p.add_argument("--report", action="store_true", help="draw the plots from the committed CSVs")
    args = p.parse_args()
    if args.worker is not None:
        work(args.worker, args.stage)
    if args.report:
        report()


RECIPE_NAMES = {"": "base", "-norm": "norm", "-paper": "paper"}


def report() -> None:
    """curves.png, one heat map per recipe, and tables.md, from the CSVs alone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curves(OUT / "curves.csv")
    recipes = [r for r in RECIPES if any(arm_of(x["run"]).endswith(f"min_snr{r}") for x in rows)]
    fig, axes = plt.subplots(2, len(recipes), figsize=(4.2 * len(recipes), 6.4), dpi=120, squeeze=False)
    for j, recipe in enumerate(recipes):
        for i, metric in enumerate(("fd_fashion", "sfd_fashion")):
            ax = axes[i, j]
            for arm, cells in seed_table(rows, metric).items():
                if arm.endswith(recipe) and (recipe or not arm.endswith(tuple(r for r in RECIPES if r))):
                    plot_seed_means(ax, cells, arm)
            ax.set_title(f"{RECIPE_NAMES[recipe]}: {metric}", fontsize=9)
            finish_axes(ax, 7)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png")
    plt.close(fig)

    denoiser = read_rows(OUT / "denoiser.csv")
    for recipe in recipes:
        arms = [f"x0-const{recipe}", f"x0-min_snr{recipe}"]
        if recipe == "":
            arms += [
                a
                for a in ("x0-min_snr_g1", "x0-min_snr_g2", "x0-min_snr_g20")
                if any(arm_of(r["run"]) == a for r in denoiser)
            ]
        chosen = [r for r in denoiser if arm_of(r["run"]) in arms and int(r["step"]) % 500 == 0]
        if any(arm_of(r["run"]) == arms[0] for r in chosen):
            heatmap(
                chosen,
                arms,
                "ema",
                OUT / f"heatmap_{RECIPE_NAMES[recipe]}.png",
                f"{RECIPE_NAMES[recipe]} recipe: unweighted x0-MSE on 1000 test images, fixed noise",
            )

    parts = []
    for metric in ("fd_fashion", "sfd_fashion", "fd_fashion@ddpm100", "sfd_fashion@ddpm100"):
        table = seed_table(rows, metric)
        if not table:
            continue
        steps = sorted({s for cells in table.values() for s in cells})
        lines = [[arm, *(fmt(cells[s]) if s in cells else "" for s in steps)] for arm, cells in table.items()]
        parts.append(f"**{metric}**, seed mean (per seed)\n\n" + markdown(["arm", *map(str, steps)], lines))
    floor = [r for r in rows if r["metric"].startswith("fd_fashion@seed") or r["run"] == "real-train"]
    if floor:
        lines = [[r["run"], str(r["step"]), r["metric"], f"{r['value']:.2f}"] for r in floor]
        parts.append("**noise floor**\n\n" + markdown(["run", "step", "metric", "value"], lines))
    path = OUT / "attribution.csv"
    if path.exists():
        lines = [
            [
                r["high"],
                r["low"],
                r["step"],
                r["switch_sigma"],
                f"{float(r['fd_fashion']):.1f}",
                f"{float(r['sfd_fashion']):.1f}",
            ]
            for r in csv.DictReader(path.open())
        ]
        parts.append(
            "**noise-band attribution** (Heun-10; `high` samples σ > switch, `low` below)\n\n"
            + markdown(["high", "low", "step", "switch σ", "FD-fashion", "sFD-fashion"], lines)
        )
    if denoiser:
        last = max(int(r["step"]) for r in denoiser if int(r["step"]) <= 1500)
        means = arm_means([r for r in denoiser if int(r["step"]) == last], "ema")
        ts = sorted({int(r["t"]) for r in denoiser}, reverse=True)
        lines = [[arm, *(f"{cells[(last, t)]:.3g}" for t in ts)] for arm, cells in means.items()]
        f0 = denoiser[0]
        lines.append(
            [
                "floors: zero / data mean / class mean",
                f"{float(f0['floor_zero']):.3g}",
                f"{float(f0['floor_mean']):.3g}",
                f"{float(f0['floor_class_mean']):.3g}",
            ]
        )
        snr = {int(r["t"]): float(r["snr"]) for r in denoiser}
        parts.append(
            f"**x0-MSE at step {last}**, seed mean, by t (SNR)\n\n"
            + markdown(["arm", *(f"{t} ({snr[t]:.2g})" for t in ts)], lines)
        )
    (OUT / "tables.md").write_text("\n\n".join(parts) + "\n")
    print((OUT / "tables.md").read_text())


if __name__ == "__main__":
    main()
