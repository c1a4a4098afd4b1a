"""Per-timestep loss weights: the one table every caller uses.

Hang et al. (ICCV 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy") define every weight
w_x0(SNR) on the x0-MSE. Because ‖ε − ε̂‖² = SNR·‖x0 − x̂0‖² and ‖v − v̂‖² = (SNR + 1)·‖x0 − x̂0‖², the weight
that multiplies the MSE of the model's own target is w_x0/SNR for ε, w_x0/(SNR + 1) for v and w_x0 for x0.
"""

import warnings

import numpy as np

PREDICTIONS = ("eps", "x0", "v")
WEIGHTINGS = ("const", "snr", "max_snr", "min_snr", "soft_min_snr", "p2", "edm", "debiased", "sigmoid")

# Combinations that Hang et al. report as diverging (Fig. 5): ε-prediction with const or max_snr.
DIVERGING = {("eps", "const"), ("eps", "max_snr")}


def loss_weight(
    weighting: str,
    snr: np.ndarray,
    prediction: str,
    gamma: float = 5.0,
    sigma_data: float = 0.5,
    sigmoid_bias: float = -3.0,
) -> np.ndarray:
    """Weight on the MSE of ``prediction``'s target at signal-to-noise ratio ``snr`` = ᾱ/(1 − ᾱ).

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
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(PREDICTIONS)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; valid: {', '.join(WEIGHTINGS)}")
    if not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma}")
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
    if not np.isfinite(sigmoid_bias):
        raise ValueError(f"sigmoid_bias must be a finite number, got {sigmoid_bias}")
    snr = np.asarray(snr, dtype=np.float64)
    w_x0 = {
        "const": lambda: np.ones_like(snr),
        "snr": lambda: snr,
        "max_snr": lambda: np.maximum(snr, gamma),
        "min_snr": lambda: np.minimum(snr, gamma),
        "soft_min_snr": lambda: snr * gamma / (snr + gamma),
        "p2": lambda: snr / (1 + snr),
        "edm": lambda: snr + 1 / sigma_data**2,
        "debiased": lambda: np.sqrt(snr),
        "sigmoid": lambda: 1 / (1 / snr + np.exp(-sigmoid_bias)),
    }[weighting]()
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
