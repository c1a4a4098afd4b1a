"""Samplers. Each is one function ``(model, x, diffusion, steps, ...) -> x``.

``model(x_t, t, **model_kwargs)`` is called with the original discrete timestep t ∈ {0..T-1} (an int64 tensor
of shape [B]); ``x`` is standard normal noise; the result is the sample. ``callback``, if given, is called
after every step with a dict {i, steps, t, x, denoised}. ``noise_fn(x)`` draws the fresh noise of stochastic
samplers (default ``torch.randn_like``; pass a per-sample seeded one for reproducible sampling).
"""

import math
from collections.abc import Callable

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion
from .schedules import space_timesteps


def _timesteps(diffusion: GaussianDiffusion, steps: int | str | None) -> list[int]:
    """The respaced timesteps, ascending: the diffusion's own, or ``space_timesteps(T, steps)``."""
    if steps is None:
        return [int(t) for t in diffusion.timesteps]
    return space_timesteps(diffusion.num_timesteps, steps)


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


@torch.no_grad()
def sample_ddpm(
    model,
    x: torch.Tensor,
    diffusion: GaussianDiffusion,
    steps: int | str | None = None,
    model_kwargs: dict | None = None,
    variance: str = "large",
    clip_denoised: bool = False,
    noise_fn: Callable = torch.randn_like,
    callback: Callable | None = None,
) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020) on the respaced chain t_K > … > t_1, one model evaluation per step
    (NFE = number of steps). Between consecutive visited steps t > t' the chain has β = 1 − ᾱ_t/ᾱ_t';
    the mean is the posterior mean at x̂0 and the variance is learned (ADM's range between β and β̃) when the
    model outputs it, else β (``variance="large"``, DiT's default) or β̃ = β(1 − ᾱ_t')/(1 − ᾱ_t) (``"small"``).
    No noise is added at the last step."""
    if variance not in ("large", "small"):
        raise ValueError(f"unknown DDPM variance {variance!r}; valid: large, small")
    ts = _timesteps(diffusion, steps)
    acp = diffusion.alphas_cumprod
    for i in reversed(range(len(ts))):
        a_t, a_prev = acp[ts[i]], (acp[ts[i - 1]] if i > 0 else 1.0)
        x0, _, var_values = diffusion.predict(model, x, _full(ts[i], x), model_kwargs, clip_denoised)
        beta = 1.0 - a_t / a_prev
        mean = beta * math.sqrt(a_prev) / (1 - a_t) * x0 + (1 - a_prev) * math.sqrt(1 - beta) / (1 - a_t) * x
        if i > 0:
            small = beta * (1 - a_prev) / (1 - a_t)
            if var_values is not None:
                frac = (var_values + 1) / 2
                log_var = frac * math.log(beta) + (1 - frac) * math.log(small)
            else:
                log_var = torch.full_like(x, math.log(beta if variance == "large" else small))
            x = mean + torch.exp(0.5 * log_var) * noise_fn(x)
        else:
            x = mean
        if callback is not None:
            callback({"i": len(ts) - 1 - i, "steps": len(ts), "t": ts[i], "x": x, "denoised": x0})
    return x


@torch.no_grad()
def sample_ddim(
    model,
    x: torch.Tensor,
    diffusion: GaussianDiffusion,
    steps: int | str | None = None,
    model_kwargs: dict | None = None,
    eta: float = 0.0,
    clip_denoised: bool = False,
    noise_fn: Callable = torch.randn_like,
    callback: Callable | None = None,
) -> torch.Tensor:
    """DDIM (Song et al. 2021) on the respaced chain, one model evaluation per step (NFE = number of steps):
    x_t' = √ᾱ_t'·x̂0 + √(1 − ᾱ_t' − σ²)·ε̂ + σ·z with σ = η·√((1 − ᾱ_t')/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_t').
    η = 0 is deterministic; η = 1 matches DDPM with β̃ variance."""
    ts = _timesteps(diffusion, steps)
    acp = diffusion.alphas_cumprod
    for i in reversed(range(len(ts))):
        a_t, a_prev = acp[ts[i]], (acp[ts[i - 1]] if i > 0 else 1.0)
        x0, eps, _ = diffusion.predict(model, x, _full(ts[i], x), model_kwargs, clip_denoised)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise_fn(x)
        if callback is not None:
            callback({"i": len(ts) - 1 - i, "steps": len(ts), "t": ts[i], "x": x, "denoised": x0})
    return x


def edm_timesteps(
    diffusion: GaussianDiffusion, steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> list[int]:
    """Karras et al. (EDM) noise levels σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, with σ_min and
    σ_max clipped to the model's range, each rounded to the nearest of the model's discrete levels
    σ_t = √(1/ᾱ_t − 1). Returns those timesteps, from high noise to low. This is the discretisation of the
    official Min-SNR sampler (scripts_vit/sampler_edm.py: discretization "edm", round_sigma)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    levels = diffusion.sigmas
    lo, hi = max(sigma_min, levels.min()), min(sigma_max, levels.max())
    frac = np.arange(steps) / max(steps - 1, 1)
    sigmas = (hi ** (1 / rho) + frac * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    return [int(np.abs(levels - s).argmin()) for s in sigmas]


def _edm_denoiser(model, diffusion: GaussianDiffusion, model_kwargs, clip_denoised: bool):
    """D(x_σ, t): the x̂0 of the VP model at x_t = x_σ/√(1 + σ_t²), where x_σ = x0 + σ_t·ε (EDM's variable)."""

    def denoise(x_sigma: torch.Tensor, t: int) -> torch.Tensor:
        x_t = (x_sigma / math.sqrt(1 + diffusion.sigmas[t] ** 2)).float()
        x0, _, _ = diffusion.predict(model, x_t, _full(t, x_t), model_kwargs, clip_denoised)
        return x0.double()

    return denoise


@torch.no_grad()
def sample_heun(
    model,
    x: torch.Tensor,
    diffusion: GaussianDiffusion,
    steps: int = 50,
    model_kwargs: dict | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    clip_denoised: bool = False,
    callback: Callable | None = None,
) -> torch.Tensor:
    """EDM's deterministic 2nd-order Heun solver (Karras et al. 2022, Alg. 1 without churn) on the probability-
    flow ODE dx/dσ = (x − D(x, σ))/σ, over the levels of :func:`edm_timesteps` and a final σ = 0.
    NFE = 2·steps − 1 (the step to σ = 0 is Euler). This is the paper's evaluation sampler (50 steps)."""
    ts = edm_timesteps(diffusion, steps, sigma_min, sigma_max, rho)
    sig = [float(diffusion.sigmas[t]) for t in ts] + [0.0]
    denoise = _edm_denoiser(model, diffusion, model_kwargs, clip_denoised)
    out_dtype = x.dtype
    x = x.double() * sig[0]
    for i, t in enumerate(ts):
        denoised = denoise(x, t)
        d = (x - denoised) / sig[i]
        x_next = x + (sig[i + 1] - sig[i]) * d
        if sig[i + 1] > 0:
            d_next = (x_next - denoise(x_next, ts[i + 1])) / sig[i + 1]
            x_next = x + (sig[i + 1] - sig[i]) * (d + d_next) / 2
        x = x_next
        if callback is not None:
            callback({"i": i, "steps": len(ts), "t": t, "x": x, "denoised": denoised})
    return x.to(out_dtype)


@torch.no_grad()
def sample_dpmpp_2m(
    model,
    x: torch.Tensor,
    diffusion: GaussianDiffusion,
    steps: int = 20,
    model_kwargs: dict | None = None,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    clip_denoised: bool = False,
    callback: Callable | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in the data prediction, over the levels of
    :func:`edm_timesteps` and a final σ = 0. With λ = −log σ, h = λ_{i+1} − λ_i and r = h_{i−1}/h:
    D' = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1} (D' = D_i at the first and last step), x ← (σ_{i+1}/σ_i)·x − expm1(−h)·D'.
    Levels that round to the same step are merged, so NFE = the number of distinct levels (= steps unless
    steps approaches T)."""
    ts = list(dict.fromkeys(edm_timesteps(diffusion, steps, sigma_min, sigma_max, rho)))
    sig = [float(diffusion.sigmas[t]) for t in ts] + [0.0]
    denoise = _edm_denoiser(model, diffusion, model_kwargs, clip_denoised)
    out_dtype = x.dtype
    x = x.double() * sig[0]
    old_denoised, h_last = None, None
    for i, t in enumerate(ts):
        denoised = denoise(x, t)
        if sig[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sig[i] / sig[i + 1])
            d = denoised
            if old_denoised is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - 1 / (2 * r) * old_denoised
            x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * d
            old_denoised, h_last = denoised, h
        if callback is not None:
            callback({"i": i, "steps": len(ts), "t": t, "x": x, "denoised": denoised})
    return x.to(out_dtype)


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "heun": sample_heun, "dpm++": sample_dpmpp_2m}


def get_sampler(name: str) -> Callable:
    """The sampler function registered under ``name`` (the CLI's ``--sampler`` choices)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
