"""Noise-band attribution at sampling time: one model for the noisy levels, another for the clean ones."""

import torch

from .gaussian_diffusion import GaussianDiffusion


def switch_at_sigma(high, low, diffusion: GaussianDiffusion, sigma: float):
    """Return ``model(x, t, **kw)`` that is ``high`` where σ_t > ``sigma`` and ``low`` where σ_t ≤ ``sigma``,
    σ_t = √(1/ᾱ_t − 1) = 1/√SNR_t of ``diffusion``. Sampling const-high + Min-SNR-low, and the reverse, tells
    which band decides a gap in sample quality without training anything new. Both models must share the target,
    schedule and data space. A batch whose rows straddle ``sigma`` runs both models and picks rows; samplers call
    the model with one t for all rows, so only one runs."""
    if not sigma > 0:
        raise ValueError(f"the switch level σ must be > 0, got {sigma}")
    use_low = torch.as_tensor(diffusion.sigmas <= sigma)

    def switched(x: torch.Tensor, t: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        rows = use_low.to(t.device)[t]
        if rows.all():
            return low(x, t, *args, **kwargs)
        if not rows.any():
            return high(x, t, *args, **kwargs)
        out_high, out_low = high(x, t, *args, **kwargs), low(x, t, *args, **kwargs)
        return torch.where(rows.reshape(-1, *([1] * (out_low.ndim - 1))).to(out_low.device), out_low, out_high)

    return switched
