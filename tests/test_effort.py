"""tools/effort_plot.py: the effort curves against the closed form of the cosine schedule's λ density."""

import numpy as np

from tools.effort_plot import effort


def test_uniform_t_on_the_cosine_schedule_gives_the_sech_density_of_log_snr():
    """SNR = cot²(u) with u linear in t, so λ = 2·log cot u and p(λ) = sech(λ/2)/(2π) (up to the 1.008 offset
    factor and the normalisation); const weighting's effort is exactly that density."""
    lam, e = effort("const", "uniform")
    mid = np.abs(lam) < 5
    np.testing.assert_allclose(e[mid], 1 / (2 * np.pi * np.cosh(lam[mid] / 2)), rtol=0.02)


def test_effort_is_weight_times_density():
    """min_snr's effort over const's is min(SNR, 5) up to one normalising constant, at every level."""
    lam, e_const = effort("const", "laplace")
    _, e_min = effort("min_snr", "laplace")
    ratio = e_min / e_const / np.minimum(np.exp(lam), 5.0)
    keep = e_const > 1e-12
    np.testing.assert_allclose(ratio[keep], ratio[keep][0], rtol=1e-6)
