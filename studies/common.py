"""What every study driver does: train a run, score a checkpoint, append a CSV row, and report seed means.

A study lives in one folder OUT: OUT/runs/NAME are train.py's run folders (with NAME.out beside each, its log),
OUT/curves.csv holds the sample scores (run, step, metric, value: tools/convergence.py's format) and
OUT/denoiser.csv the denoiser's x0 error per noise level (tools/denoiser_error.py's format). Every score is
appended as soon as it exists and skipped when a re-run finds it, so a study resumes anywhere; runs resume from
their newest checkpoint (``--resume auto``).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from data.fashion_mnist import load_arrays, pad_to_32
from evaluation import evaluate
from evaluation.denoiser import DEFAULT_TIMESTEPS, floors, held_out
from tools.convergence import Scoring, append_row, metric_kind, read_curves, score_samples
from tools.curves import arm_of
from tools.denoiser_error import read_rows, score_run
from training.checkpoint import checkpoint_path, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"fd_fashion": "FD-fashion", "sfd_fashion": "sFD-fashion"}  # as the scores are printed
DENOISER_IMAGES = 1000  # held-out test images of the x0-error scores


class Study:
    """One study folder (see the module doc); ``prog`` names the driver in its messages."""

    def __init__(self, out: Path, prog: str):
        self.out, self.prog = Path(out), prog
        self.runs, self.curves, self.denoiser = self.out / "runs", self.out / "curves.csv", self.out / "denoiser.csv"

    def scored(self, metric: str) -> set[tuple[str, int]]:
        """The (run, step) pairs that curves.csv holds ``metric`` for."""
        return {(r["run"], r["step"]) for r in read_curves(self.curves) if r["metric"] == metric}

    def train(self, name: str, config: Path, flags: list[str], step: int, log: bool = True) -> Path:
        """Train (or resume) OUT/runs/NAME with ``train.py --config CONFIG FLAGS…`` unless its checkpoint at
        ``step`` exists; ``flags`` must take it to ``step``. Its output goes to OUT/runs/NAME.out (``log``) or to
        this process's. Exits the driver if training fails. Returns the run folder."""
        run = self.runs / name
        if checkpoint_path(run / "checkpoints", step).exists():
            return run
        print(f"training {name} to step {step}", flush=True)
        cmd = [sys.executable, str(ROOT / "train.py"), "--config", str(config), *flags]
        cmd += ["--results-dir", str(run), "--resume", "auto"]
        if not log:
            if subprocess.run(cmd).returncode:
                sys.exit(f"{self.prog}: training {name} failed")
            return run
        path = self.runs / f"{name}.out"
        with path.open("a") as f:
            if subprocess.run(cmd, stdout=f, stderr=f).returncode:
                sys.exit(f"{self.prog}: training {name} failed; see {path}")
        return run

    def score(
        self,
        run: Path,
        step: int,
        scoring: Scoring,
        metrics: tuple[str, ...] = ("fd_fashion",),
        suffix: str = "",
        extra: tuple[str, ...] = (),
    ) -> dict | None:
        """Sample one checkpoint (``scoring``, plus sample_ddp.py's ``extra`` flags) and append each of
        ``metrics``, in that order, to curves.csv as METRIC<suffix>. Skipped (None) when curves.csv holds
        fd_fashion<suffix> for it already; else returns the scores by name."""
        if (run.name, step) in self.scored(f"fd_fashion{suffix}"):
            return None
        kinds = ",".join(k for k in ("fid", "sfid") if any(metric_kind(m) == k for m in metrics))
        work = self.out / f"work-{os.getpid()}"
        work.mkdir(exist_ok=True)
        values = score_samples(checkpoint_path(run / "checkpoints", step), scoring, kinds, work, extra)
        work.rmdir()
        for metric in metrics:
            row = {"run": run.name, "step": step, "metric": metric + suffix, "value": f"{values[metric]:.6g}"}
            append_row(self.curves, row)
        scores = ", ".join(f"{LABELS[m]} {values[m]:.4g}" for m in sorted(metrics))
        print(f"{run.name} step {step}{suffix}: {scores}", flush=True)
        return values

    def real_floor(self, num_images: int, sets: int = 1) -> None:
        """FD- and sFD-fashion of real training images against the test set: the metric's floor at this sample size.
        ``sets`` disjoint sets of ``num_images`` (the k-th: images k·num_images onward, padded to 32×32 as the
        models see them) go to curves.csv as run "real-train" at step k; sets already there are skipped."""
        scored = self.scored("fd_fashion")
        todo = [k for k in range(sets) if ("real-train", k) not in scored]
        if not todo:
            return
        images, labels = load_arrays("train")
        for k in todo:
            rows = slice(k * num_images, (k + 1) * num_images)
            path = self.out / f"real-train-{k}.npz"
            np.savez(path, arr_0=pad_to_32(images[rows])[..., None], arr_1=labels[rows])
            values = evaluate("fashion-test", path, "fid,sfid", "fashion")["metrics"]
            path.unlink()
            for metric in ("sfd_fashion", "fd_fashion"):
                value = f"{values[metric]:.6g}"
                append_row(self.curves, {"run": "real-train", "step": k, "metric": metric, "value": value})
            print(f"real-train set {k} ({num_images} images): FD-fashion {values['fd_fashion']:.4g}", flush=True)

    def denoise(self, run: Path, every: int, steps: list[int] | None = None) -> None:
        """The unweighted x0-MSE of the run's EMA weights at 14 fixed t (tools/denoiser_error.py) into denoiser.csv,
        for every checkpoint whose step divides by ``every`` (and is in ``steps``, if given) and is not there yet."""
        done = {(r["run"], int(r["step"]), r["weights"]) for r in read_rows(self.denoiser)}
        have = [int(c.stem) for c in list_checkpoints(run / "checkpoints")]
        wanted = [s for s in have if s % every == 0 and (steps is None or s in steps)]
        if all((run.name, s, "ema") in done for s in wanted):
            return
        done |= {(run.name, s, "ema") for s in have if s not in wanted}
        args = argparse.Namespace(weights="ema", timesteps=list(DEFAULT_TIMESTEPS), seed=0, every=every)
        x, y = held_out(None, DENOISER_IMAGES)
        score_run(run, args, x, y, floors(x, y), done, self.denoiser)


# --- reports -----------------------------------------------------------------------------------------------------


def seed_table(rows: list[dict], metric: str) -> dict[str, dict[int, list[float]]]:
    """{arm: {step: [value per seed]}} for one metric of curves.csv."""
    table: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r["metric"] == metric and r["run"] != "real-train":
            table.setdefault(arm_of(r["run"]), {}).setdefault(r["step"], []).append(r["value"])
    return dict(sorted(table.items()))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def plot_seed_means(
    ax, cells: dict[int, list[float]], label: str, style: str = "-", markersize: float = 6, dot_size: float = 8
) -> None:
    """One arm of a seed_table: its seed mean against steps, and each seed's value as a faint dot."""
    steps = sorted(cells)
    ax.plot(steps, [mean(cells[s]) for s in steps], style, marker="o", markersize=markersize, label=label)
    for s in steps:
        ax.scatter([s] * len(cells[s]), cells[s], s=dot_size, color=ax.lines[-1].get_color(), alpha=0.5)


def finish_axes(ax, legend_size: float, **legend) -> None:
    """The study plots' axes: log values against training steps, a grid and the legend."""
    ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size, **legend)


def steps_to(points: list[tuple[int, float]], threshold: float) -> int | None:
    """The first step whose value is at or below ``threshold`` (points sorted by step), or None."""
    return next((step for step, value in points if value <= threshold), None)


def markdown(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])


def fmt(values: list[float]) -> str:
    """A seed mean, with the seeds' values in brackets when there are several."""
    return f"{mean(values):.1f}" + (f" ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else "")


def compare_with_committed(new: Path, committed: Path, metric: str) -> str:
    """A table of every (run, step) of ``metric`` in both curves.csv files: the new value beside the committed one.
    A reproduction on another machine matches within the seed spread, not digit for digit (BLAS kernels differ)."""
    old = {(r["run"], r["step"]): r["value"] for r in read_curves(committed) if r["metric"] == metric}
    rows = [r for r in read_curves(new) if r["metric"] == metric and (r["run"], r["step"]) in old]
    lines = [[r["run"], str(r["step"]), f"{r['value']:.4g}", f"{old[r['run'], r['step']]:.4g}"] for r in rows]
    return markdown(["run", "step", f"{metric}, new", f"committed ({committed})"], lines)
