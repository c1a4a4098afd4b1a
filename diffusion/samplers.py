"""Samplers over a level list, in k-diffusion's shape: one short function each, all with one signature

    sample(model, x, ts, diffusion, model_kwargs=None, callback=None, noise_fn=torch.randn_like, *, options) -> x

- ``model(x_t, t, **model_kwargs)`` is the network, called with a model timestep t (int64, shape [B]);
  ``diffusion`` reads its output as x̂0, ε̂ and learned variance, whatever the target.
- ``x`` is standard normal noise, [B, C, H, W]; the result is the sample, in x's dtype.
- ``ts`` is the level list, built apart (diffusion/levels.py): strictly decreasing model timesteps; one step
  goes from each level to the next, and the last from ts[-1] to clean data (σ = 0).
- ``callback(info)``, if given, runs after every step with info = {i, steps, t, x, denoised}.
- ``noise_fn(x)`` draws the fresh noise of the stochastic samplers (default ``torch.randn_like``; pass a
  per-sample seeded one for reproducible sampling). The deterministic samplers take it and draw nothing.
- Options after ``*`` are the sampler's own (DDPM's variance, DDIM's η).

NFE, the number of model evaluations, over a list of K levels: K for ddpm, ddim and dpm++; 2K − 1 for heun.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .gaussian_diffusion import GaussianDiffusion
from .levels import edm_timesteps, respaced_timesteps


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _chain(diffusion: GaussianDiffusion, ts: list[int]) -> GaussianDiffusion:
    """DiT's respaced diffusion: the levels as a chain of their own, indexed from clean (index j is level ts[-1 − j]),
    with β_j = 1 − ᾱ_{ts[-1−j]}/ᾱ_{ts[-j]} and ᾱ = 1 below the cleanest level. Its q_posterior at j is then the law
    of the next level given this one and x0."""
    acp = diffusion.alphas_cumprod[ts[::-1]]
    return GaussianDiffusion(1.0 - acp / np.append(1.0, acp[:-1]))


@torch.no_grad()
def sample_ddpm(
    model,
    x: torch.Tensor,
    ts: list[int],
    diffusion: GaussianDiffusion,
    model_kwargs: dict | None = None,
    callback: Callable | None = None,
    noise_fn: Callable = torch.randn_like,
    *,
    variance: str = "large",
) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020): each step draws the next level from the chain's posterior
    q(x_next | x_t, x̂0), with variance learned (ADM's range between β and β̃) when the model outputs it, else β
    (``variance="large"``, DiT's default) or β̃ (``"small"``). The last step, to clean data, is the posterior
    mean x̂0, without noise. NFE = K."""
    if variance not in ("large", "small"):
        raise ValueError(f"unknown DDPM variance {variance!r}; valid: large, small")
    chain = _chain(diffusion, ts) if len(ts) > 1 else None  # a single level is one step, to x̂0
    for i, t in enumerate(ts):
        x0, _, var_values = diffusion.predict(model, x, _full(t, x), model_kwargs)
        if i == len(ts) - 1:
            x = x0  # the posterior mean at clean data (ᾱ = 1); its variance is 0
        else:
            j = len(ts) - 1 - i  # this level's index in the chain
            mean, _, log_var = chain.q_posterior(x0, x, _full(j, x))  # log_var: log β̃, [B, 1, 1, 1]
            if var_values is not None:
                log_var = chain.learned_log_variance(var_values, _full(j, x))
            elif variance == "large":
                log_var = torch.full_like(log_var, chain.log_betas[j])
            x = mean + torch.exp(0.5 * log_var.expand_as(x)) * noise_fn(x)
        if callback is not None:
            callback({"i": i, "steps": len(ts), "t": t, "x": x, "denoised": x0})
    return x


@torch.no_grad()
def sample_ddim(
    model,
    x: torch.Tensor,
    ts: list[int],
    diffusion: GaussianDiffusion,
    model_kwargs: dict | None = None,
    callback: Callable | None = None,
    noise_fn: Callable = torch.randn_like,
    *,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021), from level t to the next level s (ᾱ_s = 1 after the last):
    x_s = √ᾱ_s·x̂0 + √(1 − ᾱ_s − σ²)·ε̂ + σ·z with σ = η·√((1 − ᾱ_s)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_s).
    η = 0 is deterministic; η = 1 is DDPM with β̃ variance. NFE = K."""
    alphas = [diffusion.alphas_cumprod[t] for t in ts] + [1.0]  # [K + 1]
    for i, t in enumerate(ts):
        a_t, a_s = alphas[i], alphas[i + 1]
        x0, eps, _ = diffusion.predict(model, x, _full(t, x), model_kwargs)
        sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise_fn(x)
        if callback is not None:
            callback({"i": i, "steps": len(ts), "t": t, "x": x, "denoised": x0})
    return x


def _edm_denoiser(model, diffusion: GaussianDiffusion, model_kwargs):
    """D(x_σ, t): the x̂0 of the VP model at x_t = x_σ/√(1 + σ_t²), where x_σ = x0 + σ_t·ε (EDM's variable)."""

    def denoise(x_sigma: torch.Tensor, t: int) -> torch.Tensor:
        x_t = (x_sigma / math.sqrt(1 + diffusion.sigmas[t] ** 2)).float()
        x0, _, _ = diffusion.predict(model, x_t, _full(t, x_t), model_kwargs)
        return x0.double()

    return denoise


@torch.no_grad()
def sample_heun(
    model,
    x: torch.Tensor,
    ts: list[int],
    diffusion: GaussianDiffusion,
    model_kwargs: dict | None = None,
    callback: Callable | None = None,
    noise_fn: Callable = torch.randn_like,
) -> torch.Tensor:
    """EDM's deterministic 2nd-order Heun solver (Karras et al. 2022, Alg. 1 without churn) on the probability-
    flow ODE dx/dσ = (x − D(x, σ))/σ, from σ_{ts[0]}·x down the levels to σ = 0. The step to σ = 0 is Euler, so
    NFE = 2K − 1. This is the paper's evaluation sampler (on 50 EDM levels)."""
    sig = [float(diffusion.sigmas[t]) for t in ts] + [0.0]  # [K + 1]
    denoise = _edm_denoiser(model, diffusion, model_kwargs)
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
    ts: list[int],
    diffusion: GaussianDiffusion,
    model_kwargs: dict | None = None,
    callback: Callable | None = None,
    noise_fn: Callable = torch.randn_like,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022), multistep 2nd order in the data prediction, from σ_{ts[0]}·x down the
    levels to σ = 0. With λ = −log σ, h = λ_{i+1} − λ_i and r = h_{i−1}/h: D' = (1 + 1/(2r))·D_i − 1/(2r)·D_{i−1}
    (D' = D_i at the first and last step), x ← (σ_{i+1}/σ_i)·x − expm1(−h)·D'. NFE = K."""
    sig = [float(diffusion.sigmas[t]) for t in ts] + [0.0]  # [K + 1]
    denoise = _edm_denoiser(model, diffusion, model_kwargs)
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


@dataclass(frozen=True)
class Sampler:
    """A registered sampler: called as its function, with the level list that ``--steps N`` means for it."""

    sample: Callable
    edm_levels: bool  # EDM's ρ-spaced levels, as EDM and the official Min-SNR evaluation run the ODE solvers

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        return self.sample(*args, **kwargs)

    def timesteps(
        self, diffusion: GaussianDiffusion, steps: int, sigma_max: float = 80.0, rho: float = 7.0
    ) -> list[int]:
        """N = ``steps`` levels: EDM's with σ_max and ρ (:func:`edm_timesteps`), or else DiT's N evenly respaced
        steps (:func:`respaced_timesteps`), on which σ_max and ρ have no say."""
        if self.edm_levels:
            return edm_timesteps(diffusion, steps, sigma_max=sigma_max, rho=rho)
        return respaced_timesteps(diffusion, steps)


SAMPLERS = {
    "ddpm": Sampler(sample_ddpm, edm_levels=False),
    "ddim": Sampler(sample_ddim, edm_levels=False),
    "heun": Sampler(sample_heun, edm_levels=True),
    "dpm++": Sampler(sample_dpmpp_2m, edm_levels=True),
}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name`` (the CLI's ``--sampler`` choices)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]
