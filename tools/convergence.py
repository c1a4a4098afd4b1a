"""Evaluate every checkpoint of one or more runs and compare how fast they converge (the paper's Fig. 5).

    PYTHONPATH=. python tools/convergence.py results/study/x0-const-s0 results/study/x0-min_snr-s0 --out results/small
    PYTHONPATH=. python tools/convergence.py RUN_A RUN_B --ref VIRTUAL_imagenet256_labeled.npz \\
        --feature-extractor inception --num-samples 10000 --launcher "torchrun --nproc_per_node=8"

For each checkpoint not yet in OUT/curves.csv it samples --num-samples images with sample_ddp.py, scores them with
evaluation.evaluate, and appends (run, step, metric, value), so a re-run only evaluates what is new. Then it plots
the metric against training steps (log y, one line per run) to OUT/curves.png and prints the speed-up of every run
over the baseline (the first run): the steps the baseline needs to reach the threshold over the steps the run
needs, each read at the first checkpoint at or below it. The default threshold is the baseline's best value.
"""

import argparse
import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation import evaluate, metric_names  # noqa: E402
from training.checkpoint import list_checkpoints  # noqa: E402
from training.precision import DTYPES  # noqa: E402

FIELDS = ["run", "step", "metric", "value"]


def read_curves(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in csv.DictReader(f)]


def append_row(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


@dataclass(frozen=True)
class Scoring:
    """How one checkpoint is scored: sample_ddp.py's settings, then evaluation.evaluate against ``ref``."""

    num_samples: int = 1000
    batch_size: int = 250  # sample_ddp.py --per-proc-batch-size
    sampler: str = "heun"
    steps: int = 20
    cfg_scale: float = 1.0  # 1 = unguided, which shows the model itself
    seed: int = 0
    precision: str = "fp32"  # sample_ddp.py --precision; tf32 is the cheap speed-up on a GPU
    weights: str = "ema"  # the checkpoint's ema or raw weights
    ref: str = "fashion-test"  # evaluate_fid.py's REF
    feature_extractor: str = "fashion"
    weights_file: str | None = None  # the extractor's weights (evaluate_fid.py --weights)
    device: str | None = None
    launcher: str = sys.executable  # e.g. "torchrun --nproc_per_node=8"


def score_samples(ckpt: Path, args: Scoring, metrics: str, work: Path, extra: tuple[str, ...] = ()) -> dict:
    """Sample with sample_ddp.py (through ``args.launcher``, plus ``extra`` flags such as ``--low-ckpt``), then
    compute ``metrics`` (evaluation.evaluate's names, e.g. "fid,sfid") against ``args.ref``; returns the
    reported metrics by name. The samples are deleted after."""
    out = work / f"{ckpt.parent.parent.name}-{ckpt.stem}.npz"
    cmd = [*shlex.split(args.launcher), str(ROOT / "sample_ddp.py"), "--ckpt", str(ckpt), "--out", str(out),
           "--num-samples", str(args.num_samples), "--per-proc-batch-size", str(args.batch_size),
           "--sampler", args.sampler, "--steps", str(args.steps), "--cfg-scale", str(args.cfg_scale),
           "--seed", str(args.seed), "--weights", args.weights, "--precision", args.precision, *extra]  # fmt: skip
    res = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"sampling {ckpt} failed: {res.stderr.strip().splitlines()[-1:]}")
    result = evaluate(args.ref, out, metrics, args.feature_extractor, args.weights_file, device=args.device)
    out.unlink()
    shutil.rmtree(out.parent / f"{out.name}.shards")
    out.with_suffix(".png").unlink(missing_ok=True)
    return result["metrics"]


def score_checkpoint(ckpt: Path, args: Scoring, metric: str, work: Path) -> float:
    """One metric of one checkpoint's samples (see :func:`score_samples`)."""
    return score_samples(ckpt, args, metric_kind(metric), work)[metric]


def metric_kind(name: str) -> str:
    """'fd_fashion' or 'fid' -> 'fid'; 'sfid' -> 'sfid' (the --metrics key of evaluation.evaluate)."""
    return "sfid" if name.startswith(("sfid", "sfd")) else "fid"


def steps_to(points: list[tuple[int, float]], threshold: float) -> int | None:
    """The first step whose value is at or below ``threshold`` (points sorted by step), or None."""
    return next((step for step, value in points if value <= threshold), None)


def speedups(curves: dict[str, list[tuple[int, float]]], baseline: str, threshold: float | None) -> list[dict]:
    """For every run: steps to the threshold and the baseline's steps over its steps (None when never reached)."""
    thr = threshold if threshold is not None else min(v for _, v in curves[baseline])
    base = steps_to(curves[baseline], thr)
    rows = []
    for run, points in curves.items():
        reached = steps_to(points, thr)
        rows.append({"run": run, "threshold": thr, "steps": reached, "best": min(v for _, v in points),
                     "speedup": base / reached if base and reached else None})  # fmt: skip
    return rows


def arm_of(run: str) -> str:
    """A run's arm: its name without the trailing "-sN" seed."""
    return re.sub(r"-s\d+$", "", run)


def seed_table(rows: list[dict], metric: str) -> dict[str, dict[int, list[float]]]:
    """{arm: {step: [value per seed]}} for one metric of curves.csv."""
    table: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r["metric"] == metric and r["run"] != "real-train":
            table.setdefault(arm_of(r["run"]), {}).setdefault(r["step"], []).append(r["value"])
    return dict(sorted(table.items()))


def markdown(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |"]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in lines])


def fmt(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.1f}" + (f" ({', '.join(f'{v:.1f}' for v in values)})" if len(values) > 1 else "")


def plot(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for run, points in curves.items():
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=run)
    ax.set_yscale("log")
    ax.set_xlabel("training steps")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "runs", nargs="+", type=Path, help="run directories (RUN/checkpoints/*.pt); the first is the baseline"
    )
    p.add_argument("--out", type=Path, default=Path("results/convergence"), help="where curves.csv and curves.png go")
    d = Scoring()
    p.add_argument("--ref", default=d.ref, help="evaluate_fid.py's REF")
    p.add_argument("--feature-extractor", default=d.feature_extractor)
    p.add_argument("--weights-file", help="the extractor's weights (evaluate_fid.py --weights)")
    p.add_argument("--num-samples", type=int, default=d.num_samples)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sample_ddp.py --per-proc-batch-size")
    p.add_argument("--sampler", default=d.sampler)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale, help="1 = unguided, which shows the model itself")
    p.add_argument("--weights", choices=("ema", "raw"), default=d.weights)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", choices=DTYPES, default=d.precision, help="sample_ddp.py --precision")
    p.add_argument("--device", default=d.device)
    p.add_argument("--launcher", default=d.launcher, help='e.g. "torchrun --nproc_per_node=8"')
    p.add_argument("--threshold", type=float, help="default: the baseline's best value")
    p.add_argument("--title", default="")
    p.add_argument("--plot-only", action="store_true", help="score nothing: plot OUT/curves.csv (runs may be gone)")
    args = p.parse_args()
    args.metric = metric_names(metric_kind("fid"), args.feature_extractor)[0]
    to_score = [] if args.plot_only else args.runs
    for run in to_score:
        if not list_checkpoints(run / "checkpoints"):
            sys.exit(f"convergence.py: error: {run} has no checkpoints (RUN/checkpoints/NNNNNNN.pt)")

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path, work = args.out / "curves.csv", args.out / f"work-{os.getpid()}"  # one per process: runs may share --out
    work.mkdir(exist_ok=True)
    scoring = Scoring(**{f.name: getattr(args, f.name) for f in fields(Scoring)})
    done = {(r["run"], r["step"]) for r in read_curves(csv_path) if r["metric"] == args.metric}
    for run in to_score:
        for ckpt in list_checkpoints(run / "checkpoints"):
            step = int(ckpt.stem)
            if (run.name, step) in done:
                continue
            value = score_checkpoint(ckpt, scoring, args.metric, work)
            append_row(csv_path, {"run": run.name, "step": step, "metric": args.metric, "value": f"{value:.6g}"})
            print(f"{run.name} step {step}: {args.metric} {value:.4g}", flush=True)
    shutil.rmtree(work, ignore_errors=True)

    names = [run.name for run in args.runs]
    rows = [r for r in read_curves(csv_path) if r["metric"] == args.metric and r["run"] in names]
    curves = {name: sorted((r["step"], r["value"]) for r in rows if r["run"] == name) for name in names}
    curves = {name: points for name, points in curves.items() if points}
    if names[0] not in curves:
        sys.exit(f"convergence.py: error: no {args.metric} rows for the baseline {names[0]} in {csv_path}")
    names = list(curves)
    plot(curves, args.metric, args.out / "curves.png", args.title)
    table = speedups(curves, names[0], args.threshold)
    lines = [f"threshold {args.metric} <= {table[0]['threshold']:.4g} (baseline {names[0]})",
             f"{'run':32s} {'best':>9s} {'steps to thr':>13s} {'speed-up':>9s}"]  # fmt: skip
    for r in table:
        steps = "never" if r["steps"] is None else str(r["steps"])
        speed = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"{r['run']:32s} {r['best']:9.4g} {steps:>13s} {speed:>9s}")
    print("\n".join(lines))
    (args.out / "speedups.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
