"""Where does a weighting win or lose? The unweighted x0-MSE of every checkpoint at fixed noise levels, and a heat map.

    python tools/denoiser_error.py results/attribution/runs/x0-{const,min_snr}-s{0,1} \\
        --out results/attribution
    python tools/denoiser_error.py RUN_A RUN_B --data-path latents/val --num-images 2000 --out OUT

For every checkpoint not yet in OUT/denoiser.csv it measures mean‖x0 − x̂0‖² on held-out data (Fashion-MNIST test
images, or a latent directory) with one fixed noise draw, at each --timesteps t, in data units, and appends one row
per t beside three floors: predicting zero, the data mean and the class mean (evaluation/denoiser.py). Then it
draws OUT/denoiser_heatmap.png: runs are grouped into arms by dropping a trailing "-sN" seed suffix and averaged
over seeds; the first panel shows the baseline arm (the first run's) against the class-mean floor, and one panel
per other arm shows its error over the baseline's at the same step and t (blue: it is better, red: worse).
"""

import argparse
import csv
import math
from pathlib import Path

from diffusion import create_diffusion
from evaluation.denoiser import DEFAULT_TIMESTEPS, floors, held_out, x0_errors
from sampling import load_for_sampling
from tools.convergence import append_rows
from tools.curves import arm_of
from training.checkpoint import list_checkpoints
from training.cli import fail

ROOT = Path(__file__).resolve().parents[1]

FIELDS = ["run", "step", "weights", "t", "snr", "x0_mse", "floor_zero", "floor_mean", "floor_class_mean"]


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def score_run(run: Path, args, x, y, floor: dict, done: set, csv_path: Path) -> None:
    for ckpt in list_checkpoints(run / "checkpoints"):
        step = int(ckpt.stem)
        if (run.name, step, args.weights) in done or step % args.every:
            continue
        model, spec = load_for_sampling(str(ckpt), weights=args.weights)
        diffusion = create_diffusion(
            noise_schedule=spec.noise_schedule,
            prediction=spec.prediction,
            learn_sigma=spec.model_kwargs["learn_sigma"],
            diffusion_steps=spec.diffusion_steps,
        )
        errors = x0_errors(model, diffusion, x, y, args.timesteps, spec.from_data, spec.to_data, args.seed)
        fixed = {"run": run.name, "step": step, "weights": args.weights}
        fixed |= {f"floor_{k}": f"{v:.6g}" for k, v in floor.items()}
        rows = [{**fixed, "t": t, "snr": f"{diffusion.snr[t]:.4g}", "x0_mse": f"{e:.6g}"} for t, e in errors.items()]
        append_rows(csv_path, FIELDS, rows)
        worst = max(errors, key=lambda t: errors[t] / floor["class_mean"])
        print(
            f"{run.name} step {step}: x0-MSE {errors[min(errors)]:.4g} at t={min(errors)} ... "
            f"{errors[max(errors)]:.4g} at t={max(errors)}; class-mean floor {floor['class_mean']:.4g}; "
            f"worst against it at t={worst}",
            flush=True,
        )


def arm_means(rows: list[dict], weights: str) -> dict[str, dict[tuple[int, int], float]]:
    """{arm: {(step, t): mean x0-MSE over the arm's seeds}} for one kind of weights."""
    sums: dict[str, dict[tuple[int, int], list[float]]] = {}
    for r in rows:
        if r["weights"] == weights:
            sums.setdefault(arm_of(r["run"]), {}).setdefault((int(r["step"]), int(r["t"])), []).append(
                float(r["x0_mse"])
            )
    return {arm: {k: sum(v) / len(v) for k, v in cells.items()} for arm, cells in sums.items()}


def heatmap(rows: list[dict], arms: list[str], weights: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    means = arm_means(rows, weights)
    base = arms[0]
    floor = float(next(r["floor_class_mean"] for r in rows if arm_of(r["run"]) == base))
    snr = {int(r["t"]): float(r["snr"]) for r in rows}
    ts = sorted({t for (_, t) in means[base]}, reverse=True)  # noisy on the left, as a sampler goes
    panels = [(f"{base}: error / class-mean floor", means[base], {k: floor for k in means[base]})]
    panels += [(f"{arm} / {base}", means[arm], means[base]) for arm in arms[1:] if arm in means]
    rows_per_panel = len({s for (s, _) in means[base]})
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(1.5 + 0.62 * len(ts), 1.0 + (1.1 + 0.35 * rows_per_panel) * len(panels)),
        dpi=120,
        squeeze=False,
        constrained_layout=True,
    )
    for ax, (name, num, den) in zip(axes[:, 0], panels, strict=True):
        steps = sorted({s for (s, t) in num if (s, t) in den})
        ratio = np.full((len(steps), len(ts)), np.nan)
        for i, s in enumerate(steps):
            for j, t in enumerate(ts):
                if (s, t) in num and (s, t) in den:
                    ratio[i, j] = num[s, t] / den[s, t]
        image = ax.imshow(np.log2(ratio), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
        for i in range(len(steps)):
            for j in range(len(ts)):
                if math.isfinite(ratio[i, j]):
                    dark = abs(math.log2(ratio[i, j])) > 1.3
                    ax.text(
                        j,
                        i,
                        f"{ratio[i, j]:.2g}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if dark else "black",
                    )
        ax.set_xticks(range(len(ts)), [f"{t}\n{snr[t]:.2g}" for t in ts], fontsize=6.5)
        ax.set_yticks(range(len(steps)), steps, fontsize=7)
        ax.set_ylabel("step")
        ax.set_title(name, fontsize=9)
    axes[-1, 0].set_xlabel("t (top) and SNR (bottom); noisy levels on the left")
    fig.colorbar(image, ax=axes[:, 0], label="log2 ratio (blue < 1 < red)", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories; the first run's arm is the baseline")
    p.add_argument("--out", type=Path, required=True, help="where denoiser.csv and denoiser_heatmap.png go")
    p.add_argument("--data-path", help="a latent directory of held-out images (default: Fashion-MNIST test)")
    p.add_argument("--num-images", type=int, default=1000, help="held-out images (the first N)")
    p.add_argument("--timesteps", default=",".join(map(str, DEFAULT_TIMESTEPS)), help="comma-separated t")
    p.add_argument("--seed", type=int, default=0, help="seeds the one fixed noise draw")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema")
    p.add_argument("--every", type=int, default=1, help="only checkpoints whose step divides by this")
    p.add_argument("--plot-only", action="store_true", help="measure nothing: draw OUT/denoiser.csv")
    p.add_argument("--title", default="unweighted x0-MSE on held-out data, fixed noise")
    args = p.parse_args()
    try:
        args.timesteps = [int(t) for t in args.timesteps.split(",")]
        args.out.mkdir(parents=True, exist_ok=True)
        csv_path = args.out / "denoiser.csv"
        if not args.plot_only:
            for run in args.runs:
                if not list_checkpoints(run / "checkpoints"):
                    raise ValueError(f"{run} has no checkpoints (RUN/checkpoints/NNNNNNN.pt)")
            x, y = held_out(args.data_path, args.num_images)
            floor = floors(x, y)
            done = {(r["run"], int(r["step"]), r["weights"]) for r in read_rows(csv_path)}
            for run in args.runs:
                score_run(run, args, x, y, floor, done, csv_path)
        names = {run.name for run in args.runs}
        rows = [r for r in read_rows(csv_path) if r["run"] in names]
        if not rows:
            raise ValueError(f"{csv_path} has no rows for {', '.join(sorted(names))}")
        arms = list(dict.fromkeys(arm_of(run.name) for run in args.runs))
        heatmap(rows, arms, args.weights, args.out / "denoiser_heatmap.png", args.title)
    except ValueError as err:
        fail("denoiser_error.py", err)
    print(f"wrote {csv_path} and {args.out / 'denoiser_heatmap.png'}")


if __name__ == "__main__":
    main()
