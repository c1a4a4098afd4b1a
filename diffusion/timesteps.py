"""Training timestep densities: the probability p_t of drawing each discrete step t, one table for every caller.

The model and its sampling schedule are unchanged by the density; it only decides which noise levels are
trained how often (importance sampling of the training noise, as Hang et al. 2024 argue it should be read).
Two readings of the loss follow (``objective``):
- ``resampled``: the weight is left alone, so the loss estimates Σ_t p_t·w_t·MSE_t, the density-shaped
  objective. This is what the papers do.
- ``uniform``: the weight is divided by T·p_t, so the loss stays an unbiased estimate of the uniform
  objective (1/T)·Σ_t w_t·MSE_t and only the gradient's variance changes. A control for the first reading.
"""

import math

import numpy as np
from scipy.special import logit
from scipy.stats import laplace, norm

DENSITIES = ("uniform", "logit_normal", "laplace")
OBJECTIVES = ("resampled", "uniform")


def timestep_probabilities(
    name: str,
    snr: np.ndarray,
    logit_normal: tuple[float, float] = (0.0, 1.0),
    laplace_params: tuple[float, float] = (0.0, 0.5),
) -> np.ndarray:
    """p_t over the T steps (float64, sums to 1) for the density ``name``; ``snr`` is SNR_t, decreasing in t.

    uniform       1/T.
    logit_normal  t/T = sigmoid(n), n ~ N(m, s) (Esser et al. 2024, "Scaling Rectified Flow Transformers",
                  SD3; m = 0, s = 1): p_t = P(t ≤ T·sigmoid(n) < t + 1).
    laplace       λ = log SNR ~ Laplace(μ, b) (Hang et al. 2024, "Improved Noise Schedule for Diffusion
                  Training", arXiv 2407.03297; μ = 0, b = 0.5): p_t is the Laplace mass of step t's λ
                  interval, bounded by the midpoints between neighbouring steps' λ (±∞ at the ends).
    """
    if name not in DENSITIES:
        raise ValueError(f"unknown timestep sampling {name!r}; valid: {', '.join(DENSITIES)}")
    T = len(snr)
    if name == "uniform":
        return np.full(T, 1.0 / T)
    if name == "logit_normal":
        m, s = logit_normal
        if not s > 0:
            raise ValueError(f"the logit-normal scale s must be > 0, got {s}")
        edges = logit(np.arange(T + 1) / T)  # −∞ … +∞
        return np.diff(norm.cdf(edges, loc=m, scale=s))
    mu, b = laplace_params
    if not b > 0:
        raise ValueError(f"the Laplace scale must be > 0, got {b}")
    lam = np.log(snr)
    edges = np.concatenate([[math.inf], (lam[:-1] + lam[1:]) / 2, [-math.inf]])  # decreasing in t
    return laplace.cdf(edges[:-1], loc=mu, scale=b) - laplace.cdf(edges[1:], loc=mu, scale=b)


def objective_factor(p: np.ndarray, objective: str) -> np.ndarray:
    """What multiplies the loss weight of each step: 1 (``resampled``), or 1/(T·p_t) (``uniform``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown timestep objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if objective == "resampled":
        return np.ones_like(p)
    if np.any(p <= 0):
        zero = int(np.argmax(p <= 0))
        raise ValueError(f"the density puts no mass on step {zero}, so the uniform objective would divide by zero; "
                         "use objective 'resampled' or another density")  # fmt: skip
    return 1.0 / (len(p) * p)
