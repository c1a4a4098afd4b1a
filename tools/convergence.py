"""Score every kept checkpoint of one or more runs, then draw and read out the curves (the paper's Fig. 5).

    python tools/convergence.py results/study/x0-const-s0 results/study/x0-min_snr-s0 --out results/study
    python tools/convergence.py runs/vit-b2-const-s0 runs/vit-b2-min_snr-s0 \\
        --ref VIRTUAL_imagenet256_labeled.npz --feature-extractor inception --num-samples 10000 \\
        --launcher "torchrun --nproc_per_node=8" --out results/fig5

A RUN is a directory with RUN/checkpoints/NNNNNNN.pt, written LABEL=RUN to name it; it is keyed in OUT/curves.csv by
its label, else by its path as given, so two runs with the same folder name never share rows. For each checkpoint
not yet in OUT/curves.csv it samples --num-samples images with sample_ddp.py, scores them with evaluation.evaluate
and appends (run, step, metric, value), so a re-run only evaluates what is new. Then tools/curves.py draws
OUT/curves.png (seed mean per arm, runs grouped by their -sN suffix; the first run's arm is the baseline) and
OUT/curves-speedup.png, and prints the steps-to-threshold read-out, also kept in OUT/speedups.txt. To redraw
from curves.csv alone (the runs may be gone): python tools/curves.py OUT/curves.csv --metric METRIC.
"""

import csv
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from evaluation import evaluate, metric_names
from tools import curves
from training.atomic import write_text_atomic
from training.checkpoint import list_checkpoints
from training.cli import OneLineParser, fail
from training.precision import DTYPES

ROOT = Path(__file__).resolve().parents[1]

FIELDS = ["run", "step", "metric", "value"]


def read_curves(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{**r, "step": int(r["step"]), "value": float(r["value"])} for r in csv.DictReader(f)]


def append_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to the CSV file at ``path``, which starts with the header ``fields`` when it is new."""
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def append_row(path: Path, row: dict) -> None:
    """One (run, step, metric, value) row of curves.csv."""
    append_rows(path, FIELDS, [row])


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
    options = {
        "ckpt": ckpt,
        "out": out,
        "num-samples": args.num_samples,
        "per-proc-batch-size": args.batch_size,
        "sampler": args.sampler,
        "steps": args.steps,
        "cfg-scale": args.cfg_scale,
        "seed": args.seed,
        "weights": args.weights,
        "precision": args.precision,
    }
    flags = [item for name, value in options.items() for item in (f"--{name}", str(value))]
    cmd = [*shlex.split(args.launcher), str(ROOT / "sample_ddp.py"), *flags, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True)
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


def score_runs(runs: dict[str, Path], scoring: Scoring, metric: str, out: Path) -> None:
    """Score every checkpoint of ``runs`` ({key: directory}) that OUT/curves.csv does not hold yet."""
    csv_path, work = out / "curves.csv", out / f"work-{os.getpid()}"  # one per process: runs may share --out
    work.mkdir(parents=True, exist_ok=True)
    done = {(r["run"], r["step"]) for r in read_curves(csv_path) if r["metric"] == metric}
    for key, run in runs.items():
        for ckpt in list_checkpoints(run / "checkpoints"):
            step = int(ckpt.stem)
            if (key, step) in done:
                continue
            value = score_checkpoint(ckpt, scoring, metric, work)
            append_row(csv_path, {"run": key, "step": step, "metric": metric, "value": f"{value:.6g}"})
            print(f"{key} step {step}: {metric} {value:.4g}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


def run_keys(sources: list[str]) -> dict[str, Path]:
    """{key: directory} for ``[LABEL=]RUN`` arguments; refuses a run without checkpoints or a key given twice."""
    runs: dict[str, Path] = {}
    for source in sources:
        label, run = curves.split_label(source)
        key = label or os.path.normpath(run)
        if key in runs:
            raise ValueError(f"run {key!r} is given twice; tell them apart with LABEL=RUN")
        if not list_checkpoints(run / "checkpoints"):
            raise ValueError(f"{run} has no checkpoints (RUN/checkpoints/NNNNNNN.pt)")
        runs[key] = run
    return runs


def main(argv: list[str] | None = None) -> None:
    """The command line; ``argv`` in place of sys.argv[1:] (the CPU study scores its runs through it)."""
    p = OneLineParser(prog="convergence.py", description=__doc__, formatter_class=curves.Formatter)
    p.add_argument(
        "runs", nargs="+", metavar="[LABEL=]RUN", help="run directories; the first one's arm is the baseline"
    )
    p.add_argument("--out", type=Path, default=Path("results/convergence"), help="where curves.csv and the plots go")
    d = Scoring()
    p.add_argument("--ref", default=d.ref, help="evaluate_fid.py's REF")
    p.add_argument("--feature-extractor", default=d.feature_extractor, help="evaluate_fid.py --feature-extractor")
    p.add_argument("--weights-file", help="the extractor's weights (evaluate_fid.py --weights)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="samples per checkpoint")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="sample_ddp.py --per-proc-batch-size")
    p.add_argument("--sampler", default=d.sampler, help="sample_ddp.py --sampler")
    p.add_argument("--steps", type=int, default=d.steps, help="sample_ddp.py --steps")
    p.add_argument("--cfg-scale", type=float, default=d.cfg_scale, help="1 = unguided, which shows the model itself")
    p.add_argument("--weights", choices=("ema", "raw"), default=d.weights, help="the checkpoint's weights to sample")
    p.add_argument("--seed", type=int, default=d.seed, help="sample_ddp.py --seed")
    p.add_argument("--precision", choices=DTYPES, default=d.precision, help="sample_ddp.py --precision")
    p.add_argument("--device", default=d.device, help="the scoring device; None: cuda if there is one")
    p.add_argument("--launcher", default=d.launcher, help='e.g. "torchrun --nproc_per_node=8"')
    p.add_argument(
        "--threshold", type=float, action="append", default=[], help="a threshold to add to the ladder (repeatable)"
    )
    p.add_argument("--title", default="", help="the curves plot's title")
    args = p.parse_args(argv)
    try:
        runs = run_keys(args.runs)
    except ValueError as err:
        fail(p.prog, err)
    metric = metric_names(metric_kind("fid"), args.feature_extractor)[0]
    args.out.mkdir(parents=True, exist_ok=True)
    score_runs(runs, Scoring(**{f.name: getattr(args, f.name) for f in fields(Scoring)}), metric, args.out)

    try:
        scores = curves.read_curves_csv(args.out / "curves.csv", metric)
        arms = curves.group({key: scores[key] for key in runs}, [])
        text = curves.report(arms, metric, args.out / "curves.png", args.threshold, args.title)
    except ValueError as err:
        fail(p.prog, err)
    print(text)
    write_text_atomic(args.out / "speedups.txt", text + "\n")


if __name__ == "__main__":
    main()
