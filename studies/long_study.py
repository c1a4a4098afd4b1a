"""The long convergence study (issue 25): x0 + const against x0 + Min-SNR-5 run until the curves flatten.

    OMP_NUM_THREADS=1 python studies/long_study.py --worker 0 --finals &   # two workers, one per core
    OMP_NUM_THREADS=1 python studies/long_study.py --worker 1 --finals &
    python studies/long_study.py --report                                  # plots, tables, read-out

The protocol, fixed before anything ran (results/long/README.md):
- **Recipe.** The weightings study's, unchanged: DiT-T/4 on Fashion-MNIST pixels, x0-prediction, cosine schedule,
  batch 32, AdamW lr 1e-3 (constant after 100 warm-up steps), EMA 0.995, label drop 0.1
  (configs/fashion_dit-t4_x0_const.toml). Checkpoints every 500 steps, all kept. Only the weighting differs.
- **Stage 1.** Arms x0 + const and x0 + Min-SNR-5, seeds 0 and 1. Horizon 30K steps; extended by 5K at a time
  up to 60K unless both arms' seed means of FD-fashion changed less than 3% over the last 5K steps
  (stopping_horizon). The workers apply the rule themselves: each trains its runs to the horizon, waits for the
  other's scores there, and goes on if the rule extends it. --horizon fixes it instead.
- **Scores** at every 1000 steps to 10K, then every 2500 (SCHEDULE): FD-fashion and sFD-fashion of the same 2000
  EMA samples, EDM Heun-10 (19 NFE), unguided, sample seed 0, against the 10K test images (curves.csv); the
  unweighted x0-MSE at 14 fixed t on 1000 test images with one fixed noise draw (denoiser.csv).
- **At the horizon** (--finals): the noise floor (sample seeds 1 and 2) and the same 2000 samples with Heun-50 and
  DDPM-250, so that the reading does not hinge on the sampler. Added at 42.5K, before any final ran, once late
  checkpoints were seen to jitter by 10-30%: a second floor from the checkpoints 2000, 1500, 1000 and 500 steps
  before the horizon (sample seed 0), beside the scheduled ones at the horizon and 2500 before it; and the metric's
  own floor, FD-fashion of 5 disjoint sets of 2000 real training images (run "real-train", step = the set).
- **Stage 2** (--stage 2), if Min-SNR-5 has overtaken const by the horizon: the paper's Table 1 ε pair, ε-MSE
  (``--prediction eps --weighting snr``) against ε + Min-SNR-5, on the same recipe, seeds and scores, to stage
  1's final horizon.

Each run trains to the next scheduled step, is scored, and goes on (``--resume auto``), so a score exists as soon
as its checkpoint does. Every score is appended when it exists and skipped when a re-run finds it: the study
resumes anywhere, and a run whose scores are all in is not retrained.
"""

import argparse
import dataclasses
import math
import time
from pathlib import Path
from statistics import fmean, stdev

from studies.common import Study, finish_axes, fmt, markdown, plot_seed_means, seed_table
from tools.convergence import Scoring, read_curves
from tools.curves import arm_of, group, load, select
from tools.curves import report as speedup_report
from tools.denoiser_error import heatmap, read_rows
from training.atomic import atomic_write, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]

CONFIG = ROOT / "configs" / "fashion_dit-t4_x0_const.toml"
ARMS = {
    "x0-const": ["--weighting", "const"],
    "x0-min_snr": ["--weighting", "min_snr", "--snr-gamma", "5"],
    "eps-snr": ["--prediction", "eps", "--weighting", "snr"],
    "eps-min_snr": ["--prediction", "eps", "--weighting", "min_snr", "--snr-gamma", "5"],
}
STAGES = {1: ("x0-const", "x0-min_snr"), 2: ("eps-snr", "eps-min_snr")}  # each a baseline and its Min-SNR-5
BASE = ["--ckpt-every", "500", "--keep-checkpoints", "0", "--num-workers", "0"]
HEUN = Scoring(num_samples=2000, sampler="heun", steps=10)
FINALS = {
    "@seed1": dataclasses.replace(HEUN, seed=100_000),
    "@seed2": dataclasses.replace(HEUN, seed=200_000),
    "@heun50": dataclasses.replace(HEUN, steps=50),
    "@ddpm250": dataclasses.replace(HEUN, sampler="ddpm", steps=250),
}
BEFORE = (2000, 1500, 1000, 500)  # --finals also scores the checkpoints this many steps before the horizon (@ckpt)
SMOOTH = 3  # --report also reads every run smoothed over this many evaluations (tools/curves.py --smooth)
REAL_SETS = 5  # --finals (worker 0) also scores this many disjoint sets of real training images, as many as samples


START, EXTEND, LAST, FLAT = 30_000, 5000, 60_000, 0.03  # the stopping rule: horizons and the relative change


def stopping_horizon(rows: list[dict], arms: tuple[str, ...], seeds: list[int]) -> int:
    """The horizon stage 1's rule sets, from the FD-fashion rows of curves.csv: START, extended by EXTEND while an
    arm's seed mean changed by FLAT or more over the last EXTEND steps, up to LAST. Where a score that the rule
    needs is missing, the horizon it has come to so far: the one to train to next."""
    value = {(r["run"], r["step"]): r["value"] for r in rows if r["metric"] == "fd_fashion"}

    def mean(arm: str, step: int) -> float:
        return sum(value[f"{arm}-s{seed}", step] for seed in seeds) / len(seeds)

    horizon = START
    while horizon < LAST:
        if not all(scored_at(rows, arms, seeds, step) for step in (horizon - EXTEND, horizon)):
            return horizon
        if all(abs(mean(arm, horizon) / mean(arm, horizon - EXTEND) - 1) < FLAT for arm in arms):
            return horizon
        horizon += EXTEND
    return horizon


def scored_at(rows: list[dict], arms: tuple[str, ...], seeds: list[int], step: int) -> bool:
    """Whether curves.csv's rows hold FD-fashion of every run of ``arms`` and ``seeds`` at ``step``."""
    have = {(r["run"], r["step"]) for r in rows if r["metric"] == "fd_fashion"}
    return all((f"{arm}-s{seed}", step) in have for arm in arms for seed in seeds)


def schedule(horizon: int) -> list[int]:
    """Scored steps: every 1000 to 10K, then every 2500 up to the horizon."""
    return [s for s in [*range(1000, 10_001, 1000), *range(12_500, horizon + 1, 2500)] if s <= horizon]


def plan(seeds: list[int], stage: int = 1) -> list[list[str]]:
    """Each worker's runs: seed by seed, the two arms side by side (one per worker), alternating which goes first."""
    base, min_snr = STAGES[stage]
    order = [[f"{base}-s{s}", f"{min_snr}-s{s}"][:: 1 if s % 2 == 0 else -1] for s in seeds]
    return [[pair[0] for pair in order], [pair[1] for pair in order]]


def finals_tables(rows: list[dict], arms: tuple[str, ...]) -> list[str]:
    """--finals' read-out for one stage (baseline arm first), as markdown: the noise floor at the horizon, from the
    sample seeds (0, 1, 2) and from the checkpoints of the last 2500 steps (the kept ones every 500 steps, sample
    seed 0), each the standard deviation of one score, per run and pooled (the root of the mean variance); the gap
    between the arms' means over training and sample seeds against both floors; and the other samplers. A run
    enters each table once all of its values for it are in."""
    fd = {(r["run"], r["step"], r["metric"]): r["value"] for r in rows if r["metric"].startswith("fd_fashion")}
    horizon = {r["run"]: r["step"] for r in rows if r["metric"] == "fd_fashion@seed1" and arm_of(r["run"]) in arms}
    runs = sorted(horizon, key=lambda run: (arms.index(arm_of(run)), run))
    if not runs:
        return []

    def values(run: str, keys: list[tuple[int, str]]) -> list[float] | None:
        found = [fd.get((run, horizon[run] - back, "fd_fashion" + suffix)) for back, suffix in keys]
        return None if None in found else found

    seeds = [(0, ""), (0, "@seed1"), (0, "@seed2")]
    checkpoints = [(2500, ""), *((back, "@ckpt") for back in BEFORE), (0, "")]
    samplers = [(0, ""), (0, "@heun50"), (0, "@ddpm250")]
    floor_lines, sampler_lines, pooled, by_arm, by_sampler = [], [], {}, {}, {}
    for run in runs:
        cells = [run, str(horizon[run])]
        by_seed = values(run, seeds)
        for name, found in (("sample seeds", by_seed), ("checkpoints", values(run, checkpoints))):
            cells += ["", ""] if found is None else [", ".join(f"{v:.3f}" for v in found), f"{stdev(found):.3f}"]
            if found is not None:
                pooled.setdefault(name, []).append(stdev(found) ** 2)
        if by_seed is not None:
            by_arm.setdefault(arm_of(run), []).append(fmean(by_seed))
        floor_lines.append(cells)
        found = values(run, samplers)
        if found is not None:
            sampler_lines.append([run, str(horizon[run]), *(f"{v:.3f}" for v in found)])
            for i, v in enumerate(found):
                by_sampler.setdefault(arm_of(run), [[] for _ in samplers])[i].append(v)
    floor = {name: math.sqrt(fmean(variances)) for name, variances in pooled.items()}
    summary = [f"pooled: {name} {sd:.3f}" for name, sd in floor.items()]
    real = [r["value"] for r in rows if r["run"] == "real-train" and r["metric"] == "fd_fashion"]
    if len(real) > 1:
        summary.append(f"real training images ({len(real)} sets): {fmean(real):.3f}, sd {stdev(real):.3f}")
    if set(by_arm) == set(arms):
        base, other = (fmean(by_arm[arm]) for arm in arms)
        against = ", ".join(f"{abs(base - other) / sd:.1f}x the {name} floor" for name, sd in floor.items() if sd)
        summary.append(f"{arms[1]} - {arms[0]}, means over training and sample seeds: {other:.3f} - {base:.3f}")
        summary[-1] += f" = {other - base:+.3f} ({against})"
    header = ["run", "horizon", "FD: sample seeds 0, 1, 2", "sd", "FD: checkpoints, last 2500 steps", "sd"]
    title = "**Noise floor at the horizon** (FD-fashion, 2000 Heun-10 samples; sd: standard deviation of one score)"
    parts = [f"{title}\n\n{markdown(header, floor_lines)}\n\n" + "; ".join(summary)]
    if sampler_lines:
        if set(by_sampler) == set(arms):
            base, other = ([fmean(v) for v in by_sampler[arm]] for arm in arms)
            ratios = [f"{o / b:.2f}" for b, o in zip(base, other, strict=True)]
            sampler_lines.append([f"{arms[1]} / {arms[0]}, training-seed means", "", *ratios])
        header = ["run", "horizon", "Heun-10 (19 NFE)", "Heun-50 (99 NFE)", "DDPM-250"]
        parts.append("**Samplers at the horizon** (FD-fashion, sample seed 0)\n\n" + markdown(header, sampler_lines))
    return parts


class LongStudy(Study):
    def __init__(self, out: Path, horizon: int):
        super().__init__(out, "long_study")
        self.horizon = horizon

    def train_to(self, name: str, step: int) -> Path:
        """Train (or resume) run ``name`` up to ``step``; returns its run directory."""
        arm, seed = name.rsplit("-s", 1)
        return self.train(name, CONFIG, [*BASE, *ARMS[arm], "--max-steps", str(step), "--seed", seed], step)

    def fd(self, run: Path, step: int, scoring: Scoring = HEUN, suffix: str = "") -> None:
        """FD- and sFD-fashion of one checkpoint's samples into curves.csv, as fd_fashion<suffix> and sfd_..."""
        self.score(run, step, scoring, ("fd_fashion", "sfd_fashion"), suffix)

    def finished(self, name: str, finals: bool) -> bool:
        steps = schedule(self.horizon)
        fd_done = all((name, s) in self.scored("fd_fashion") for s in steps)
        denoised = {int(r["step"]) for r in read_rows(self.denoiser) if r["run"] == name}
        extra = {(f"fd_fashion{k}", self.horizon) for k in FINALS} | {
            ("fd_fashion@ckpt", self.horizon - back) for back in BEFORE
        }
        finals_done = all((name, step) in self.scored(metric) for metric, step in extra) if finals else True
        return fd_done and set(steps) <= denoised and finals_done

    def work(self, names: list[str], finals: bool) -> None:
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        for name in names:
            if self.finished(name, finals):
                continue
            steps = schedule(self.horizon)
            for step in steps:
                run = self.train_to(name, step)
                self.fd(run, step)
                self.denoise(run, 500, [s for s in steps if s <= step])
            if finals:
                for back in BEFORE:
                    self.fd(run, self.horizon - back, HEUN, "@ckpt")
                for suffix, scoring in FINALS.items():
                    self.fd(run, self.horizon, scoring, suffix)

    def work_to_rule(self, names: list[str], seeds: list[int], stage: int, finals: bool) -> None:
        """Train and score ``names`` to the horizon that stage 1's stopping rule sets. In stage 1, wait there for
        the other worker's scores and go on while the rule extends the horizon; stage 2 needs it settled."""
        while True:
            rows = read_curves(self.curves)
            self.horizon = stopping_horizon(rows, STAGES[1], seeds)
            if scored_at(rows, STAGES[1], seeds, self.horizon):
                break
            if stage == 2:
                raise SystemExit(f"long_study: stage 1 has not settled its horizon (scores to step {self.horizon})")
            self.work(names, finals=False)
            print(f"waiting for every run's score at step {self.horizon}", flush=True)
            while not scored_at(read_curves(self.curves), STAGES[1], seeds, self.horizon):
                time.sleep(60)
        print(f"horizon {self.horizon}", flush=True)
        self.work(names, finals)

    def report(self) -> None:
        """OUT/curves.png (seed means of FD- and sFD-fashion), OUT/tables.md with the steps-to-threshold read-out
        (as measured and smoothed) and the finals' tables, and per stage OUT/stage<N>-fd.png, its -speedup.png, the
        same smoothed (stage<N>-fd-smooth3*.png) and the denoiser heat map stage<N>-denoiser.png, from curves.csv
        and denoiser.csv alone."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = read_curves(self.curves)
        metrics = {"fd_fashion": "FD-fashion", "sfd_fashion": "sFD-fashion"}
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
        parts = []
        for ax, (metric, name) in zip(axes, metrics.items(), strict=True):
            table = seed_table(rows, metric)
            for arm, cells in table.items():
                plot_seed_means(ax, cells, arm, markersize=3, dot_size=6)
            ax.set_ylabel(f"{name} ({HEUN.num_samples} samples, Heun-{HEUN.steps})")
            ax.set_title(f"DiT-T/4 on Fashion-MNIST: {name}, seed mean (dots: seeds)", fontsize=9)
            finish_axes(ax, 7)
            steps = sorted({s for cells in table.values() for s in cells})
            lines = [[arm, *(fmt(cells[s]) if s in cells else "" for s in steps)] for arm, cells in table.items()]
            parts.append(f"**{name}**, seed mean (per seed)\n\n" + markdown(["arm", *map(str, steps)], lines))
        fig.tight_layout()
        with atomic_write(self.out / "curves.png") as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        fd_arms, denoiser = group(load([str(self.curves)], "fd_fashion"), []), read_rows(self.denoiser)
        for stage, arms in STAGES.items():
            if set(arms) <= fd_arms.keys():
                plot = self.out / f"stage{stage}-fd.png"  # and stage<N>-fd-speedup.png beside it
                curves = select(fd_arms, ",".join(arms))
                readout = speedup_report(curves, "fd_fashion", plot, [10.0], f"stage {stage}, FD-fashion")
                parts.append(f"**Stage {stage}: steps to each FD-fashion threshold**\n\n```\n{readout}\n```")
                plot = self.out / f"stage{stage}-fd-smooth{SMOOTH}.png"
                title = f"stage {stage}, FD-fashion, each run smoothed over {SMOOTH} evaluations"
                readout = speedup_report(curves, "fd_fashion", plot, [10.0], title, SMOOTH)
                parts.append(
                    f"**Stage {stage}, read on curves smoothed over {SMOOTH} evaluations** (a check that the reading "
                    f"does not rest on single checkpoints; not the protocol's)\n\n```\n{readout}\n```"
                )
                title = f"stage {stage}: unweighted x0-MSE on 1000 test images, fixed noise, seed mean"
                heatmap(denoiser, list(arms), "ema", self.out / f"stage{stage}-denoiser.png", title)
        for arms in STAGES.values():
            parts += finals_tables(rows, arms)
        write_text_atomic(self.out / "tables.md", "\n\n".join(parts) + "\n")
        print((self.out / "tables.md").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=int, choices=(0, 1), help="which half of the runs to train and score")
    p.add_argument(
        "--out", type=Path, default=ROOT / "results" / "long", help="the study directory (default: %(default)s)"
    )
    p.add_argument("--horizon", type=int, help="train and score to this step (default: the stopping rule's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default: %(default)s)")
    p.add_argument("--stage", type=int, choices=sorted(STAGES), default=1, help="1: the x0 pair; 2: the ε pair")
    p.add_argument("--finals", action="store_true", help="also the noise floor and other samplers at the horizon")
    p.add_argument("--report", action="store_true", help="draw curves.png and write tables.md from curves.csv")
    args = p.parse_args()
    study = LongStudy(args.out, args.horizon)
    if args.worker is not None:
        names = plan(args.seeds, args.stage)[args.worker]
        if args.finals and args.worker == 0:
            study.real_floor(HEUN.num_samples, REAL_SETS)
        if args.horizon is not None:
            study.work(names, args.finals)
        else:
            study.work_to_rule(names, args.seeds, args.stage, args.finals)
    if args.report:
        study.report()


if __name__ == "__main__":
    main()
