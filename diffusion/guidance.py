"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper with the model's own signature."""

import torch

from .gaussian_diffusion import GaussianDiffusion


def classifier_free_guidance(
    model,
    scale: float,
    null_class: int,
    channels: int | None = None,
    sigma_interval: tuple[float, float] | None = None,
    diffusion: GaussianDiffusion | None = None,
):
    """Return ``guided(x, t, y, **kw)``: out = c + (s − 1)·(c − u), with c = model(x, t, y) and
    u = model(x, t, null_class), both from one batched pass of 2B.

    Guidance acts on the first ``channels`` output channels (default: all of the prediction, i.e. x's
    channel count; DiT guides only the first 3 of 4 latent channels); the rest, and the learned-variance
    channels, come from the conditional pass. Since x̂0, ε̂ and v̂ are affine in each other at fixed (x_t, t),
    guiding any one of them is the same. With ``sigma_interval=(lo, hi)`` (Kynkäänniemi et al. 2024) guidance
    applies only where lo ≤ σ_t ≤ hi, σ_t = √(1/ᾱ_t − 1) of ``diffusion``; elsewhere s = 1. At ``scale == 1``
    the wrapper is the conditional model itself, with no unconditional pass.
    """
    if sigma_interval is not None:
        if diffusion is None:
            raise ValueError("sigma_interval needs the diffusion, to map t to σ_t")
        lo, hi = sigma_interval
        if not 0 <= lo <= hi:
            raise ValueError(f"guidance interval must satisfy 0 <= lo <= hi, got {sigma_interval}")

    def guided(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        if scale == 1:
            return model(x, t, y, **kwargs)
        null = torch.full_like(y, null_class)
        cond, uncond = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]), **kwargs).chunk(2)
        k = x.shape[1] if channels is None else channels
        s = torch.full((x.shape[0],), float(scale), device=x.device)
        if sigma_interval is not None:
            sigma = torch.as_tensor(diffusion.sigmas, device=t.device)[t].to(x.device)
            s = torch.where((sigma >= lo) & (sigma <= hi), s, torch.ones_like(s))
        s = s.reshape(-1, *([1] * (x.ndim - 1))).to(cond.dtype)
        return torch.cat([cond[:, :k] + (s - 1) * (cond[:, :k] - uncond[:, :k]), cond[:, k:]], dim=1)

    return guided


def timestep_interval_sigmas(lo_t: int, hi_t: int, diffusion: GaussianDiffusion) -> tuple[float, float]:
    """The σ interval [σ_LO, σ_HI] that holds exactly the model timesteps LO..HI, σ_t = √(1/ᾱ_t − 1) increasing
    in t. This is how the official limited-interval run (Min-SNR repository,
    configs/in256/inference_limited_interval_guidance.sh: ``--t_from 0 --t_to 800``) names its interval."""
    last = diffusion.num_timesteps - 1
    if not (float(lo_t).is_integer() and float(hi_t).is_integer() and 0 <= lo_t <= hi_t <= last):
        raise ValueError(f"a t interval needs whole timesteps with 0 <= LO <= HI <= {last}, got {lo_t},{hi_t}")
    return float(diffusion.sigmas[int(lo_t)]), float(diffusion.sigmas[int(hi_t)])
