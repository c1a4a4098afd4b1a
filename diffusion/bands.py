"""Noise bands: the decades of SNR in which the per-level x0 error is logged and compared.

The edges are SNR = 0.01, 0.1, 1, 10 and 100, so the six bands read as "SNR below 0.01" (almost pure noise: the
sampler's first steps, where global layout is decided) up to "SNR 100 and above" (fine detail). SNR = 1 is where
Min-SNR-γ's x0 weight min(SNR, γ) crosses const's weight 1; below it Min-SNR down-weights every level by its SNR.
On the cosine schedule with T = 1000 the edges fall at t ≈ 936, 806, 500, 196 and 56.
"""

import numpy as np

SNR_EDGES = (0.01, 0.1, 1.0, 10.0, 100.0)


def _label(value: float) -> str:
    return f"{value:g}"


BAND_NAMES = (
    f"snr_lt_{_label(SNR_EDGES[0])}",
    *(f"snr_{_label(lo)}-{_label(hi)}" for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:], strict=True)),
    f"snr_ge_{_label(SNR_EDGES[-1])}",
)


def band_of_snr(snr: np.ndarray) -> np.ndarray:
    """The band index (0 = noisiest … 5 = cleanest) of each SNR: band k holds SNR_EDGES[k−1] ≤ SNR < SNR_EDGES[k]."""
    return np.searchsorted(np.asarray(SNR_EDGES), np.asarray(snr, dtype=np.float64), side="right")
