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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logit, ndtr  # scipy.stats would add 0.5 s to every command's start

from .params import Param, check_name, declared, resolve


@dataclass(frozen=True)
class Density:
    """``p(snr, **params)``: p_t over the T steps (float64, sums to 1) given SNR_t, decreasing in t; and the
    parameters it takes."""

    p: Callable[..., np.ndarray]
    params: Mapping[str, Param] = field(default_factory=dict)


def uniform_density(snr: np.ndarray) -> np.ndarray:
    """1/T."""
    return np.full(len(snr), 1.0 / len(snr))


def logit_normal_density(snr: np.ndarray, logit_normal: tuple[float, float]) -> np.ndarray:
    """t/T = sigmoid(n), n ~ N(m, s) (Esser et al. 2024, "Scaling Rectified Flow Transformers", SD3; m = 0, s = 1):
    p_t = P(t ≤ T·sigmoid(n) < t + 1)."""
    m, s = logit_normal
    if not s > 0:
        raise ValueError(f"the logit-normal scale s must be > 0, got {s}")
    T = len(snr)
    edges = logit(np.arange(T + 1) / T)  # −∞ … +∞
    return np.diff(ndtr((edges - m) / s))  # Φ, the standard normal CDF


def laplace_density(snr: np.ndarray, laplace: tuple[float, float]) -> np.ndarray:
    """λ = log SNR ~ Laplace(μ, b) (Hang et al. 2024, "Improved Noise Schedule for Diffusion Training", arXiv
    2407.03297; μ = 0, b = 0.5): p_t is the Laplace mass of step t's λ interval, bounded by the midpoints between
    neighbouring steps' λ (±∞ at the ends)."""
    mu, b = laplace
    if not b > 0:
        raise ValueError(f"the Laplace scale must be > 0, got {b}")
    lam = np.log(snr)
    edges = np.concatenate([[math.inf], (lam[:-1] + lam[1:]) / 2, [-math.inf]])  # decreasing in t
    z = (edges - mu) / b
    cdf = np.where(z > 0, 1.0 - 0.5 * np.exp(-z), 0.5 * np.exp(z))  # the Laplace CDF
    return cdf[:-1] - cdf[1:]


# One row per density. A parameter is declared in its row and becomes create_diffusion's keyword and train.py's
# flag of the same name (--logit-normal M S).
DENSITY_TABLE = {
    "uniform": Density(uniform_density),
    "logit_normal": Density(
        logit_normal_density, {"logit_normal": Param((0.0, 1.0), "t/T = sigmoid(N(M, S))", metavar=("M", "S"))}
    ),
    "laplace": Density(
        laplace_density, {"laplace": Param((0.0, 0.5), "log SNR ~ Laplace(MU, B)", metavar=("MU", "B"))}
    ),
}
DENSITIES = tuple(DENSITY_TABLE)
DENSITY_PARAMS = declared(DENSITY_TABLE)  # every density parameter: name -> Param
OBJECTIVES = ("resampled", "uniform")


def density_params(name: str, given: Mapping, strict: bool = False) -> dict:
    """The parameters of density ``name``: ``given`` over the table's defaults (diffusion/params.py)."""
    return resolve("timestep sampling", DENSITY_TABLE, name, given, strict)


def timestep_probabilities(name: str, snr: np.ndarray, **params) -> np.ndarray:
    """p_t over the T steps (float64, sums to 1) for the density ``name`` (a row of ``DENSITY_TABLE``); ``snr``
    is SNR_t, decreasing in t; ``params`` are the density's parameters by name, defaults from the table."""
    return DENSITY_TABLE[name].p(snr, **density_params(name, params))


def objective_factor(p: np.ndarray, objective: str) -> np.ndarray:
    """What multiplies the loss weight of each step: 1 (``resampled``), or 1/(T·p_t) (``uniform``)."""
    check_name("timestep objective", objective, OBJECTIVES)
    if objective == "resampled":
        return np.ones_like(p)
    if np.any(p <= 0):
        zero = int(np.argmax(p <= 0))
        raise ValueError(
            f"the density puts no mass on step {zero}, so the uniform objective would divide by zero; "
            "use objective 'resampled' or another density"
        )
    return 1.0 / (len(p) * p)
