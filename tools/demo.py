"""`make demo`: the whole system on the embedded Fashion-MNIST default, on the CPU, in about a quarter of an hour.

1. train a tiny ViT (ViT-T/4, x0-prediction, Min-SNR-5, batch 32) with train.py, checkpointing every 500 steps;
2. sample every checkpoint with EDM Heun through sample_ddp.py and score FD-fashion against the 10K test images;
3. write results/demo/samples.png (one row per class) and results/demo/curves.png (x0 error per noise band and
   FD-fashion);
4. print a summary table.

Re-running continues where it stopped: training resumes, and evaluated checkpoints are skipped.
"""

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.fashion_mnist import CLASSES  # noqa: E402
from diffusion.bands import BAND_NAMES  # noqa: E402
from tools.convergence import Scoring, append_row, read_curves, score_checkpoint  # noqa: E402
from training.checkpoint import list_checkpoints  # noqa: E402


def run(cmd: list[str]) -> None:
    """Run a script of this repo in the foreground (its progress bars show); stop the demo if it fails."""
    res = subprocess.run([sys.executable, *cmd], env={**os.environ, "PYTHONPATH": str(ROOT)})
    if res.returncode != 0:
        sys.exit(f"demo: {' '.join(cmd[:1])} failed with exit code {res.returncode}")


def class_grid(npz: Path, path: Path) -> None:
    """One row per class, as many columns as samples per class, with the class names on the left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.load(npz, allow_pickle=False) as f:
        images, labels = f["arr_0"][..., 0], f["arr_1"]
    per_class = np.bincount(labels).min()
    rows = [np.concatenate(list(images[labels == c][:per_class]), axis=1) for c in range(len(CLASSES))]
    fig, ax = plt.subplots(figsize=(per_class * 0.55 + 1.4, len(CLASSES) * 0.55), dpi=120)
    ax.imshow(np.concatenate(rows, axis=0), cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([32 * c + 16 for c in range(len(CLASSES))], CLASSES, fontsize=7)
    ax.set_xticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves_plot(metrics_csv: Path, fd: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open() as f:
        log = list(csv.DictReader(f))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    for name in BAND_NAMES:
        a.plot([int(r["step"]) for r in log], [float(r[f"x0_mse_{name}"]) for r in log], lw=0.8, label=name)
    a.set_yscale("log")
    a.set_xlabel("training steps")
    a.set_title("unweighted x0-MSE per noise band")
    a.legend(fontsize=7)
    b.plot(*zip(*fd, strict=True), marker="o")
    b.set_yscale("log")
    b.set_xlabel("training steps")
    b.set_title("FD-fashion (lower is better)")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/demo"))
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--num-samples", type=int, default=300, help="samples per FD-fashion evaluation")
    p.add_argument("--steps", type=int, default=10, help="Heun steps when evaluating (NFE = 2·steps − 1)")
    args = p.parse_args()
    tic = time.time()

    print(f"[1/4] training ViT-T/4 (x0, Min-SNR-5) on Fashion-MNIST for {args.max_steps} steps", flush=True)
    run(["train.py", "--config", str(ROOT / "configs/fashion_vit-t4_x0_min_snr.toml"), "--max-steps",
         str(args.max_steps), "--global-batch-size", str(args.batch_size), "--ckpt-every", str(args.ckpt_every),
         "--keep-checkpoints", "0", "--results-dir", str(args.out / "run"), "--resume", "auto",
         "--log-every", "50"])  # fmt: skip
    train_minutes = (time.time() - tic) / 60

    print(f"[2/4] FD-fashion of every checkpoint ({args.num_samples} samples, Heun-{args.steps})", flush=True)
    csv_path, work = args.out / "curves.csv", args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    done = {r["step"]: r["value"] for r in read_curves(csv_path)}
    settings = Scoring(num_samples=args.num_samples, batch_size=100, sampler="heun", steps=args.steps, device="cpu")
    for ckpt in list_checkpoints(args.out / "run/checkpoints"):
        step = int(ckpt.stem)
        if step not in done:
            done[step] = score_checkpoint(ckpt, settings, "fd_fashion", work)
            append_row(csv_path, {"run": "demo", "step": step, "metric": "fd_fashion", "value": f"{done[step]:.6g}"})
        print(f"  step {step}: FD-fashion {done[step]:.4g}", flush=True)

    print("[3/4] a class grid from the last checkpoint (Heun-25, cfg 1.5)", flush=True)
    last = list_checkpoints(args.out / "run/checkpoints")[-1]
    grid_npz = args.out / f"grid-{last.stem}.npz"
    run(["sample_ddp.py", "--ckpt", str(last), "--num-samples", "100", "--per-proc-batch-size", "100",
         "--sampler", "heun", "--steps", "25", "--cfg-scale", "1.5", "--seed", "1",
         "--out", str(grid_npz)])  # fmt: skip
    class_grid(grid_npz, args.out / "samples.png")
    fd = sorted(done.items())
    curves_plot(args.out / "run/metrics.csv", fd, args.out / "curves.png")

    print("[4/4] summary", flush=True)
    with (args.out / "run/metrics.csv").open() as f:
        final_loss = float(list(csv.DictReader(f))[-1]["loss"])
    print(f"{'step':>6s} {'FD-fashion':>11s}")
    for step, value in fd:
        print(f"{step:6d} {value:11.4g}")
    total = (time.time() - tic) / 60
    print(f"final training loss {final_loss:.4g}; training {train_minutes:.1f} min, everything {total:.1f} min")
    print(f"wrote {args.out / 'samples.png'} (one row per class), {args.out / 'curves.png'}, {csv_path}")


if __name__ == "__main__":
    main()
