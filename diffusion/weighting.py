"""Per-timestep loss weights: the one table every caller uses.

Hang et al. (ICCV 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy") define every weight
w_x0(SNR) on the x0-MSE. Because ‖ε − ε̂‖² = SNR·‖x0 − x̂0‖² and ‖v − v̂‖² = (SNR + 1)·‖x0 − x̂0‖², the weight
that multiplies the MSE of the model's own target is w_x0/SNR for ε, w_x0/(SNR + 1) for v and w_x0 for x0.
"""

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .params import Param, check_name, declared, resolve

PREDICTIONS = ("eps", "x0", "v")


@dataclass(frozen=True)
class Weighting:
    """``w_x0(snr, **params)``: the weight on the x0-MSE at each float64 SNR, and the parameters it takes."""

    w_x0: Callable[..., np.ndarray]
    params: Mapping[str, Param] = field(default_factory=dict)


GAMMA = Param(5.0, "γ of min_snr / max_snr / soft_min_snr", lambda v: v > 0, "> 0")
SIGMA_DATA = Param(0.5, "σ_d of the edm weighting (EDM's 0.5; 1 with --data-norm channel)", lambda v: v > 0, "> 0")
SIGMOID_BIAS = Param(-3.0, "b in sigmoid(b − log SNR) on the ε-MSE (SiD2: −3)", np.isfinite, "a finite number")

# One row per weighting; its formula and source are in loss_weight's docstring. A parameter is declared in its row
# (here by name, as γ is shared) and becomes create_diffusion's keyword and train.py's flag of the same name.
WEIGHTING_TABLE = {
    "const": Weighting(lambda snr: np.ones_like(snr)),
    "snr": Weighting(lambda snr: snr),
    "max_snr": Weighting(lambda snr, snr_gamma: np.maximum(snr, snr_gamma), {"snr_gamma": GAMMA}),
    "min_snr": Weighting(lambda snr, snr_gamma: np.minimum(snr, snr_gamma), {"snr_gamma": GAMMA}),
    "soft_min_snr": Weighting(lambda snr, snr_gamma: snr * snr_gamma / (snr + snr_gamma), {"snr_gamma": GAMMA}),
    "p2": Weighting(lambda snr: snr / (1 + snr)),
    "edm": Weighting(lambda snr, sigma_data: snr + 1 / sigma_data**2, {"sigma_data": SIGMA_DATA}),
    "debiased": Weighting(lambda snr: np.sqrt(snr)),
    "sigmoid": Weighting(
        lambda snr, sigmoid_bias: 1 / (1 / snr + np.exp(-sigmoid_bias)), {"sigmoid_bias": SIGMOID_BIAS}
    ),
}
WEIGHTINGS = tuple(WEIGHTING_TABLE)
WEIGHTING_PARAMS = declared(WEIGHTING_TABLE)  # every weighting parameter: name -> Param

# Combinations that Hang et al. report as diverging (Fig. 5): ε-prediction with const or max_snr.
DIVERGING = {("eps", "const"), ("eps", "max_snr")}


def weighting_params(weighting: str, given: Mapping, strict: bool = False) -> dict:
    """The parameters of ``weighting``: ``given`` over the table's defaults, each checked (diffusion/params.py)."""
    return resolve("weighting", WEIGHTING_TABLE, weighting, given, strict)


def loss_weight(weighting: str, snr: np.ndarray, prediction: str, **params) -> np.ndarray:
    """Weight on the MSE of ``prediction``'s target at signal-to-noise ratio ``snr`` = ᾱ/(1 − ᾱ). ``params`` are
    the weighting's parameters by name (``snr_gamma``, ``sigma_data``, ``sigmoid_bias``); missing ones take the
    table's defaults.

    w_x0 by name:
      const          1
      snr            SNR                 (plain ε-MSE: DiT/ADM's default)
      max_snr        max(SNR, γ)         (γ = 1 is Salimans & Ho's "truncated SNR")
      min_snr        min(SNR, γ)         (Min-SNR-γ, the paper's method; γ = 5)
      soft_min_snr   SNR·γ/(SNR + γ)     (a smooth min)
      p2             SNR/(1 + SNR)^1     (P2 weighting, Choi et al., CVPR 2022, "Perception Prioritized
                                          Training of Diffusion Models", with k = 1 and exponent 1: their
                                          λ_t = 1/(k + SNR)^γ on the ε-MSE; γ here is not used)
      edm            SNR + 1/σ_d²        (Karras et al., NeurIPS 2022, "Elucidating the Design Space of
                                          Diffusion-Based Generative Models": (σ² + σ_d²)/(σ·σ_d)² on the
                                          D-MSE, σ² = 1/SNR; σ_d = 0.5; with σ_d = 1 it is the v-MSE)
      debiased       √SNR                (Yu et al. 2023, "Debias the Training of Diffusion Models", arXiv
                                          2310.08442: 1/√SNR on the ε-MSE)
      sigmoid        SNR·sigmoid(b − λ)  (Kingma & Gao, NeurIPS 2023, "Understanding Diffusion Objectives as
                     = 1/(1/SNR + e^−b)   the ELBO with Simple Data Augmentation": sigmoid(b − λ) on the
                                          ε-MSE, λ = log SNR; b = −3 as in SiD2, Hoogeboom et al. 2024,
                                          arXiv 2410.19324, Eq. 4. Both papers state the weight per unit
                                          λ; with uniform t this table's weight is per draw, as for Min-SNR)
    then divided by SNR for ``eps``, by SNR + 1 for ``v``, unchanged for ``x0``.
    """
    check_name("prediction", prediction, PREDICTIONS)
    values = weighting_params(weighting, params)
    snr = np.asarray(snr, dtype=np.float64)
    w_x0 = WEIGHTING_TABLE[weighting].w_x0(snr, **values)
    if prediction == "eps":
        return w_x0 / snr
    if prediction == "v":
        return w_x0 / (snr + 1)
    return w_x0


def warn_if_diverging(prediction: str, weighting: str) -> None:
    """Warn (but run) for a combination that Hang et al. report as diverging."""
    if (prediction, weighting) in DIVERGING:
        warnings.warn(
            f"prediction={prediction!r} with weighting={weighting!r} diverged in Hang et al. 2023 "
            "(Min-SNR, arXiv 2303.09556, Fig. 5); running it anyway",
            stacklevel=3,
        )
