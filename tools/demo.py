"""`make demo`: the whole system on the embedded Fashion-MNIST default, on the CPU, in under 10 minutes.

1. train the recipe's model with train.py (checkpoints every 500 steps), scoring the EMA weights every 500 steps
   (train.py --eval-every: FD-fashion of 200 samples, DPM-Solver++-10 at cfg 3, into the run's metrics.csv);
2. draw 300 samples (30 per class) from the last checkpoint with sample_ddp.py, kept as OUT/samples-STEP.npz;
3. score them: label accuracy (the share the committed Fashion-MNIST classifier assigns to the class they were
   drawn for; it scores 91% on real test images) and FD-fashion against the 10K test images;
4. write results/demo/samples.png (one row per class) and results/demo/curves.png (FD-fashion against steps from
   the training log, and the x0 error per noise band). With --docs-figure, samples.png also goes to
   docs/assets/demo.png, the README's picture.

`--recipe paper` runs the paper's recipe (ViT-T/4, x0 + Min-SNR-5) at the same budget instead, into
results/demo-paper/. Re-running continues where it stopped: training resumes and finished samples are reused.
"""

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from data.fashion_mnist import CLASSES
from diffusion.bands import BAND_NAMES
from evaluation import evaluate
from evaluation.fashion import label_accuracy
from training.atomic import atomic_write
from training.checkpoint import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]

# Scoring during training, cheap enough to keep the demo within 10 minutes on 2 cores (docs/demo.md): 200 samples
# keep the 128-d covariance non-singular, and DPM-Solver++ at 10 steps scored an x0 + const model as Heun at 50
# did (43.1 against 43.2 FD-fashion; bench/RESULTS.md, quality per NFE).
EVAL = {
    "eval-every": 500,
    "eval-samples": 200,
    "eval-batch-size": 100,
    "eval-sampler": "dpm++",
    "eval-steps": 10,
    "eval-cfg-scale": 3.0,
}
DOCS_FIGURE = ROOT / "docs/assets/demo.png"

# What each recipe trains and samples, and the one line that says why (the measurements are in docs/demo.md).
RECIPES = {
    "demo": {
        "config": "configs/fashion_dit-t4_x0_const.toml",
        "train": {"max-steps": 2000, "global-batch-size": 32, "num-workers": 0},
        "sample": {"sampler": "heun", "steps": 25, "cfg-scale": 3.0},
        "eval": EVAL,
        "out": "results/demo",
        "why": "DiT-T/4, x0 + const, lr 1e-3, Heun-25 at cfg 3: of the recipes tried, the one that gets recognisable "
        "garments on 2 CPU cores in minutes; the paper's ViT with Min-SNR-5 does not at this budget (--recipe paper)",
    },
    "paper": {
        "config": "configs/fashion_vit-t4_x0_min_snr.toml",
        "train": {"max-steps": 2000, "global-batch-size": 32, "num-workers": 0},
        "sample": {"sampler": "heun", "steps": 25, "cfg-scale": 3.0},
        "eval": EVAL,
        "out": "results/demo-paper",
        "why": "the paper's recipe (ViT-T/4, x0 + Min-SNR-5) at the demo's budget, to show what it gives here",
    },
}


def run(cmd: list[str]) -> None:
    """Run a script of this repo in the foreground (its progress bars show); stop the demo if it fails."""
    res = subprocess.run([sys.executable, *cmd], env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        sys.exit(f"demo: {cmd[0]} failed with exit code {res.returncode}")


def flags(options: dict) -> list[str]:
    return [item for key, value in options.items() for item in (f"--{key}", str(value))]


def class_grid(images: np.ndarray, labels: np.ndarray, per_class: int, *paths: Path) -> None:
    """One row per class, ``per_class`` columns, with the class names on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [np.concatenate(list(images[labels == c][:per_class, ..., 0]), axis=1) for c in range(len(CLASSES))]
    fig, ax = plt.subplots(figsize=(per_class * 0.55 + 1.4, len(CLASSES) * 0.55), dpi=120)
    ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([32 * c + 16 for c in range(len(CLASSES))], CLASSES, fontsize=7)
    ax.set_xticks([])
    fig.tight_layout()
    for path in paths:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)


def logged(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """(step, value) of one column of train.py's metrics.csv, from the rows that have it (evaluation rows hold the
    score, training rows the loss and band errors)."""
    with metrics_csv.open() as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


def curves_plot(metrics_csv: Path, path: Path) -> None:
    """FD-fashion against steps (train.py --eval-every) beside the x0 error per noise band, both from the log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fd_ax, ax) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    fd = logged(metrics_csv, "fd_fashion")
    fd_ax.plot([s for s, _ in fd], [v for _, v in fd], "o-", lw=1)
    fd_ax.set_title(f"FD-fashion during training ({EVAL['eval-samples']} samples)")
    for name in BAND_NAMES:
        band = logged(metrics_csv, f"x0_mse_{name}")
        ax.plot([s for s, _ in band], [v for _, v in band], lw=0.8, label=name)
    ax.set_title("unweighted x0-MSE per noise band")
    ax.legend(fontsize=7)
    for a in (fd_ax, ax):
        a.set_yscale("log")
        a.set_xlabel("training steps")
        a.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=RECIPES, default="demo", help="what to train and sample (RECIPES)")
    p.add_argument("--out", type=Path, help="the output folder (default: the recipe's, results/demo)")
    p.add_argument("--max-steps", type=int, help="override the recipe's training steps")
    p.add_argument("--num-samples", type=int, default=300, help="samples to score (a multiple of 10)")
    p.add_argument("--docs-figure", action="store_true", help=f"also write the samples' picture to {DOCS_FIGURE}")
    args = p.parse_args()
    recipe = RECIPES[args.recipe]
    out, train = args.out or ROOT / recipe["out"], dict(recipe["train"])
    if args.max_steps:
        train["max-steps"] = args.max_steps
    tic = time.time()
    print(f"recipe: {recipe['why']}", flush=True)

    print(f"[1/3] training for {train['max-steps']} steps ({recipe['config']})", flush=True)
    config, run_dir = str(ROOT / recipe["config"]), str(out / "run")
    keep = "--keep-checkpoints 0 --resume auto".split()
    run(["train.py", "--config", config, *flags(train), *flags(recipe["eval"]), *keep, "--results-dir", run_dir])
    train_minutes = (time.time() - tic) / 60

    last = list_checkpoints(out / "run/checkpoints")[-1]
    s = recipe["sample"]
    print(
        f"[2/3] {args.num_samples} samples from step {int(last.stem)} ({s['sampler']}-{s['steps']}, "
        f"cfg {s['cfg-scale']})",
        flush=True,
    )
    npz = out / f"samples-{last.stem}.npz"
    batch = ["--num-samples", str(args.num_samples), "--per-proc-batch-size", "100"]
    run(["sample_ddp.py", "--ckpt", str(last), *batch, *flags(s), "--out", str(npz)])

    print("[3/3] scoring and plotting", flush=True)
    with np.load(npz, allow_pickle=False) as f:
        images, labels = f["arr_0"], f["arr_1"]
    accuracy = label_accuracy(images, labels)
    fd = evaluate("fashion-test", npz, "fid", extractor="fashion")["metrics"]["fd_fashion"]
    pictures = [out / "samples.png", *([DOCS_FIGURE] if args.docs_figure else [])]
    class_grid(images, labels, 10, *pictures)
    curves_plot(out / "run/metrics.csv", out / "curves.png")
    total = (time.time() - tic) / 60
    e = recipe["eval"]
    during = ", ".join(f"step {s} {v:.1f}" for s, v in logged(out / "run/metrics.csv", "fd_fashion"))
    during = during or f"none logged (the run in {out / 'run'} was trained before scoring during training)"
    print(
        f"FD-fashion during training ({e['eval-samples']} samples, {e['eval-sampler']}-{e['eval-steps']}, cfg "
        f"{e['eval-cfg-scale']:g}): {during}"
    )
    print(f"label accuracy {accuracy:.0%} (real test images: 91%), FD-fashion {fd:.1f} ({len(images)} samples)")
    print(f"training {train_minutes:.1f} min (scoring included), everything {total:.1f} min")
    print(f"wrote {' and '.join(map(str, pictures))} (one row per class) and {out / 'curves.png'}")


if __name__ == "__main__":
    main()
