"""Discretisations: the noise levels a sampler visits, as a list of model timesteps, built apart from the samplers.

A level list ``ts`` is strictly decreasing: ts[0] is the noisiest step, and every sampler takes one step from each
listed level to the next and a last one from ts[-1] to clean data (σ = 0). So a list of K levels is K steps; what
each step costs in model evaluations is the sampler's own rule (diffusion/samplers.py). The level of step t is
σ_t = √(1/ᾱ_t − 1) = 1/√SNR_t (``diffusion.sigmas``), increasing in t.
"""

import numpy as np

from .gaussian_diffusion import GaussianDiffusion
from .schedules import space_timesteps


def respaced_timesteps(diffusion: GaussianDiffusion, spec: str | int | None = None) -> list[int]:
    """DiT's respacing (:func:`diffusion.schedules.space_timesteps`), from noisy to clean: ``"N"`` takes N steps
    evenly spaced over [0, T−1] (uniform in t), ``"ddimN"`` DDIM's stride, ``""`` every step. The default is the
    respacing the diffusion was created with (``create_diffusion(timestep_respacing=...)``)."""
    steps = diffusion.timesteps if spec is None else space_timesteps(diffusion.num_timesteps, spec)
    return sorted((int(t) for t in steps), reverse=True)


def edm_timesteps(
    diffusion: GaussianDiffusion, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> list[int]:
    """Karras et al. (EDM) levels σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i < N = ``steps``,
    with σ_min and σ_max clipped to the model's range, each rounded to the nearest of the model's levels σ_t.
    This is the discretisation of the official Min-SNR sampler (scripts_vit/sampler_edm.py: discretization "edm",
    round_sigma). Levels that round to the same step are merged, so the list is shorter than N only when N
    approaches T."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    levels = diffusion.sigmas
    lo, hi = max(sigma_min, levels.min()), min(sigma_max, levels.max())
    frac = np.arange(steps) / max(steps - 1, 1)
    sigmas = (hi ** (1 / rho) + frac * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return sorted({int(np.abs(levels - s).argmin()) for s in sigmas}, reverse=True)
