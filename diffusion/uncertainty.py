"""EDM2's learned uncertainty (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", section 5): a small function u(λ) of the noise level, trained with the model, that divides the loss.

    loss = w·MSE / e^{u(λ)} + u(λ)

For a fixed level the minimum over u is at e^u = w·MSE, so at convergence every noise level contributes the same
amount and u reads off the loss the weighting leaves there. u composes with any weighting and is never used
for sampling.
"""

import math

import torch
from torch import nn


class LogVariance(nn.Module):
    """u(λ): Fourier features of EDM2's c_noise = ln(σ)/4 = −λ/8 (fixed random frequencies and phases, as EDM2's
    MPFourier) into one linear layer, zero-initialised so that training starts from the plain loss."""

    def __init__(self, channels: int = 128, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels, generator=g))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels, generator=g))
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, log_snr: torch.Tensor) -> torch.Tensor:
        c_noise = -log_snr.float()[:, None] / 8  # [B, 1]
        features = math.sqrt(2) * torch.cos(c_noise * self.freqs + self.phases)  # [B, C]
        return self.linear(features)[:, 0]  # [B]


def uncertainty_loss(weighted: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per-sample w·MSE/e^u + u."""
    return weighted * torch.exp(-u) + u
