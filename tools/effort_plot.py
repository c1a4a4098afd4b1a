"""The training effort per noise level of every weighting × timestep density: w_x0(λ)·p(λ) against λ = log SNR.

    python tools/effort_plot.py --out docs/assets/effort.png

On the 1000-step cosine schedule, p(λ) is the density of λ that the training draws of t induce (p_t over the
λ spacing of step t), and w_x0 the weight on the x0-MSE (diffusion/weighting.py), so the product is how much of
the loss's gradient each noise level gets. Each curve is normalised to integrate to 1 over λ. Ticks at the top
mark the levels where EDM Heun-10 and Heun-50 evaluate the model: what sampling needs the model to be good at.
Every weighting takes its parameters' defaults from the table in diffusion/weighting.py (sigmoid: b = −3), and
the legend names them. The command also prints, per density and weighting, the share of the effort at λ < 0 and
the λ of the peak: the numbers docs/weightings.md quotes.
"""

import argparse
from pathlib import Path

import numpy as np

from diffusion import create_diffusion
from diffusion.levels import edm_timesteps
from diffusion.timesteps import DENSITIES
from diffusion.weighting import WEIGHTING_TABLE, WEIGHTINGS, loss_weight

ROOT = Path(__file__).resolve().parents[1]

# Every registered weighting, each at its parameters' defaults: the values a run without the flag trains with.
PARAMS = {w: {name: param.default for name, param in WEIGHTING_TABLE[w].params.items()} for w in WEIGHTINGS}
SYMBOL = {"snr_gamma": "γ", "sigma_data": "σ_d", "sigmoid_bias": "b"}  # a parameter not here is shown by name


def label(weighting: str) -> str:
    """The legend entry: the name and its parameters, e.g. ``sigmoid (b = −3)``."""
    params = ", ".join(f"{SYMBOL.get(k, k)} = {v:g}".replace("-", "−") for k, v in PARAMS[weighting].items())
    return f"{weighting} ({params})" if params else weighting


def effort(weighting: str, density: str) -> tuple[np.ndarray, np.ndarray]:
    """(λ_t, normalised w_x0(λ_t)·p(λ_t)) over the steps, λ decreasing in t."""
    d = create_diffusion(noise_schedule="cosine", prediction="x0", weighting=weighting, timestep_sampling=density)
    lam = np.log(d.snr)
    p_lam = d.loss.timestep_probs / np.abs(np.gradient(lam))  # density per unit λ
    e = loss_weight(weighting, d.snr, "x0", **PARAMS[weighting]) * p_lam
    return lam, e / np.trapezoid(e[::-1], lam[::-1])


def summary(weighting: str, density: str) -> tuple[float, float]:
    """(share of the effort at λ < 0, λ of the peak) of one curve."""
    lam, e = effort(weighting, density)
    lam, e = lam[::-1], e[::-1]
    noisy = lam < 0
    return float(np.trapezoid(e[noisy], lam[noisy])), float(lam[np.argmax(e)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/assets/effort.png"))
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = create_diffusion(noise_schedule="cosine", prediction="x0")
    fig, axes = plt.subplots(1, len(DENSITIES), figsize=(13, 3.8), dpi=120, sharey=True)
    for ax, density in zip(axes, DENSITIES, strict=True):
        for w in WEIGHTINGS:
            lam, e = effort(w, density)
            ax.plot(lam, e, lw=1.2, label=label(w))
        for steps, y in ((10, 0.93), (50, 0.97)):
            ts = edm_timesteps(d, steps)
            ax.plot(np.log(d.snr[ts]), [y] * len(ts), "|", ms=6, color="k", transform=ax.get_xaxis_transform())
            ax.text(-19.5, y, f"Heun-{steps}", fontsize=6, va="center", transform=ax.get_xaxis_transform())
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 5)
        ax.set_xlim(-20, 11)
        ax.set_xlabel("λ = log SNR  (noisy ← → clean)")
        ax.set_title(f"t density: {density}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("w_x0(λ)·p(λ), normalised")
    axes[1].legend(fontsize=6, loc="lower center", ncol=4)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    print(f"{'density':<13} {'weighting':<22} {'λ < 0':>6} {'peak λ':>7}")
    for density in DENSITIES:
        for w in WEIGHTINGS:
            share, peak = summary(w, density)
            print(f"{density:<13} {label(w):<22} {share:>6.1%} {peak:>7.2f}")


if __name__ == "__main__":
    main()
