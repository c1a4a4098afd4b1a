"""The long convergence study (issue 25): x0 + const against x0 + Min-SNR-5 run until the curves flatten.

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/long_study.py --worker 0 &   # two workers, one per core
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/long_study.py --worker 1 &
    PYTHONPATH=. python tools/long_study.py --report                          # plots and tables only

The protocol, fixed before anything ran (results/long/README.md):
- **Recipe.** The weightings study's, unchanged: DiT-T/4 on Fashion-MNIST pixels, x0-prediction, cosine schedule,
  batch 32, AdamW lr 1e-3 (constant after 100 warm-up steps), EMA 0.995, label drop 0.1
  (configs/fashion_dit-t4_x0_const.toml). Checkpoints every 500 steps, all kept. Only the weighting differs.
- **Stage 1.** Arms x0 + const and x0 + Min-SNR-5, seeds 0 and 1. Horizon 30K steps (--horizon); extended by
  5K at a time up to 60K unless both arms' seed means changed less than 3% over the last 5K steps.
- **Scores** at every 1000 steps to 10K, then every 2500 (SCHEDULE): FD-fashion and sFD-fashion of the same 2000
  EMA samples, EDM Heun-10 (19 NFE), unguided, sample seed 0, against the 10K test images (curves.csv); the
  unweighted x0-MSE at 14 fixed t on 1000 test images with one fixed noise draw (denoiser.csv).
- **At the horizon** (--finals): the noise floor (sample seeds 1 and 2) and the same 2000 samples with Heun-50 and
  DDPM-250, so that the reading does not hinge on the sampler.

Each run trains to the next scheduled step, is scored, and goes on (``--resume auto``), so a score exists as soon
as its checkpoint does. Every score is appended when it exists and skipped when a re-run finds it: the study
resumes anywhere, and a run whose scores are all in is not retrained.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.denoiser import DEFAULT_TIMESTEPS, floors, held_out  # noqa: E402
from tools.convergence import Scoring, append_row, read_curves, score_samples  # noqa: E402
from tools.denoiser_error import read_rows, score_run  # noqa: E402
from training.checkpoint import checkpoint_path  # noqa: E402

CONFIG = ROOT / "configs" / "fashion_dit-t4_x0_const.toml"
ARMS = {"x0-const": ["--weighting", "const"], "x0-min_snr": ["--weighting", "min_snr", "--snr-gamma", "5"]}
BASE = ["--ckpt-every", "500", "--keep-checkpoints", "0", "--num-workers", "0"]
HEUN = Scoring(num_samples=2000, sampler="heun", steps=10)
FINALS = {
    "@seed1": dataclasses.replace(HEUN, seed=100_000),
    "@seed2": dataclasses.replace(HEUN, seed=200_000),
    "@heun50": dataclasses.replace(HEUN, steps=50),
    "@ddpm250": dataclasses.replace(HEUN, sampler="ddpm", steps=250),
}


def schedule(horizon: int) -> list[int]:
    """Scored steps: every 1000 to 10K, then every 2500 up to the horizon."""
    return [s for s in [*range(1000, 10_001, 1000), *range(12_500, horizon + 1, 2500)] if s <= horizon]


def plan(seeds: list[int]) -> list[list[str]]:
    """Each worker's runs: seed by seed, the two arms side by side (one per worker), alternating which goes first."""
    order = [[f"x0-const-s{s}", f"x0-min_snr-s{s}"][:: 1 if s % 2 == 0 else -1] for s in seeds]
    return [[pair[0] for pair in order], [pair[1] for pair in order]]


class Study:
    def __init__(self, out: Path, horizon: int):
        self.out, self.horizon = out, horizon
        self.curves, self.denoiser = out / "curves.csv", out / "denoiser.csv"

    def scored(self, metric: str) -> set[tuple[str, int]]:
        return {(r["run"], r["step"]) for r in read_curves(self.curves) if r["metric"] == metric}

    def train(self, name: str, step: int) -> Path:
        """Train (or resume) run ``name`` up to ``step``; returns its run directory."""
        run = self.out / "runs" / name
        if checkpoint_path(run / "checkpoints", step).exists():
            return run
        print(f"training {name} to step {step}", flush=True)
        arm, seed = name.rsplit("-s", 1)
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(CONFIG), *BASE, *ARMS[arm],
               "--max-steps", str(step), "--seed", seed, "--results-dir", str(run), "--resume", "auto"]  # fmt: skip
        log = self.out / "runs" / f"{name}.out"
        with log.open("a") as f:
            if subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=f, stderr=f).returncode:
                sys.exit(f"long_study: training {name} failed; see {log}")
        return run

    def fd(self, run: Path, step: int, scoring: Scoring = HEUN, suffix: str = "") -> None:
        """FD- and sFD-fashion of one checkpoint's samples into curves.csv, as fd_fashion<suffix> and sfd_..."""
        if (run.name, step) in self.scored(f"fd_fashion{suffix}"):
            return
        work = self.out / f"work-{os.getpid()}"
        work.mkdir(exist_ok=True)
        values = score_samples(checkpoint_path(run / "checkpoints", step), scoring, "fid,sfid", work)
        work.rmdir()
        for metric in ("fd_fashion", "sfd_fashion"):
            append_row(self.curves, {"run": run.name, "step": step, "metric": metric + suffix,
                                     "value": f"{values[metric]:.6g}"})  # fmt: skip
        print(f"{run.name} step {step}{suffix}: FD-fashion {values['fd_fashion']:.4g}, "
              f"sFD-fashion {values['sfd_fashion']:.4g}", flush=True)  # fmt: skip

    def denoise(self, run: Path, steps: list[int]) -> None:
        """The per-band x0 error at the scheduled steps only (the other checkpoints count as done)."""
        args = argparse.Namespace(weights="ema", timesteps=list(DEFAULT_TIMESTEPS), seed=0, every=500)
        done = {(r["run"], int(r["step"]), r["weights"]) for r in read_rows(self.denoiser)}
        done |= {(run.name, s, "ema") for s in range(500, self.horizon + 1, 500) if s not in steps}
        if all((run.name, s, "ema") in done for s in steps):
            return
        x, y = held_out(None, 1000)
        score_run(run, args, x, y, floors(x, y), done, self.denoiser)

    def finished(self, name: str, finals: bool) -> bool:
        steps = schedule(self.horizon)
        fd_done = all((name, s) in self.scored("fd_fashion") for s in steps)
        denoised = {int(r["step"]) for r in read_rows(self.denoiser) if r["run"] == name}
        extra = all((name, self.horizon) in self.scored(f"fd_fashion{k}") for k in FINALS) if finals else True
        return fd_done and set(steps) <= denoised and extra

    def work(self, names: list[str], finals: bool) -> None:
        (self.out / "runs").mkdir(parents=True, exist_ok=True)
        for name in names:
            if self.finished(name, finals):
                continue
            steps = schedule(self.horizon)
            for step in steps:
                run = self.train(name, step)
                self.fd(run, step)
                self.denoise(run, [s for s in steps if s <= step])
            if finals:
                for suffix, scoring in FINALS.items():
                    self.fd(run, self.horizon, scoring, suffix)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", type=int, choices=(0, 1), help="which half of the runs to train and score")
    p.add_argument(
        "--out", type=Path, default=ROOT / "results" / "long", help="the study directory (default: %(default)s)"
    )
    p.add_argument("--horizon", type=int, default=30_000, help="train and score to this step (default: %(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (default: %(default)s)")
    p.add_argument("--finals", action="store_true", help="also the noise floor and other samplers at the horizon")
    args = p.parse_args()
    study = Study(args.out, args.horizon)
    if args.worker is not None:
        study.work(plan(args.seeds)[args.worker], args.finals)


if __name__ == "__main__":
    main()
