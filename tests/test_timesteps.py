"""Every training timestep density in the registry: p_t against its closed form, draws that follow p_t, and the two
objectives. A registry entry or parameter without a case here fails."""

import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from diffusion import create_diffusion
from diffusion.timesteps import DENSITIES, DENSITY_PARAMS, density_params

T = 1000


def phi(z: float) -> float:
    """The standard normal CDF, through erfc to keep the far left tail's digits."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def logit_normal_mass(k: int, lam: np.ndarray, p: dict) -> float:
    """P(t = k) = Φ((logit((k + 1)/T) − m)/s) − Φ((logit(k/T) − m)/s), written out with math.erfc."""
    (m, s), lg = p["logit_normal"], lambda u: math.log(u / (1 - u))
    return phi((lg((k + 1) / T) - m) / s) - phi((lg(k / T) - m) / s)


def laplace_mass(k: int, lam: np.ndarray, p: dict) -> float:
    """λ_t = log SNR_t; step t owns λ between the midpoints with its neighbours. Laplace CDF written out."""
    mu, b = p["laplace"]
    cdf = lambda x: 0.5 * math.exp((x - mu) / b) if x < mu else 1 - 0.5 * math.exp(-(x - mu) / b)  # noqa: E731
    return cdf((lam[k - 1] + lam[k]) / 2) - cdf((lam[k] + lam[k + 1]) / 2)


# P(t = k) for 0 < k < T − 1, by density, with p the density's parameters.
CLOSED_FORM = {
    "uniform": lambda k, lam, p: 1 / T,
    "logit_normal": logit_normal_mass,  # SD3: t/T = sigmoid(n), n ~ N(m, s)
    "laplace": laplace_mass,  # Hang et al. 2024: λ ~ Laplace(μ, b)
}
# Every density parameter: its documented default (docs/weightings.md) and another value.
DOCUMENTED = {"logit_normal": (0.0, 1.0), "laplace": (0.0, 0.5)}
OTHER = {"logit_normal": (-0.5, 1.2), "laplace": (0.3, 0.7)}


def test_every_case_is_a_registry_entry_and_every_parameter_has_values():
    assert set(CLOSED_FORM) <= set(DENSITIES), "a case for a density that is gone"
    assert set(DOCUMENTED) == set(OTHER) == set(DENSITY_PARAMS), "give every density parameter two values here"


@pytest.mark.parametrize("density", DENSITIES)
def test_mass_is_the_closed_form(density):
    assert density in CLOSED_FORM, f"no closed form for the density {density}; add it to CLOSED_FORM"
    own = list(density_params(density, {}))
    cases = [({}, {k: DOCUMENTED[k] for k in own})]  # none given: the table's defaults are the documented values
    if own:
        cases.append(({k: OTHER[k] for k in own},) * 2)
    for given, params in cases:
        d = create_diffusion(noise_schedule="cosine", diffusion_steps=T, timestep_sampling=density, **given)
        lam = np.log(d.alphas_cumprod / (1 - d.alphas_cumprod))
        p = d.loss.timestep_probs
        for k in (1, 50, 300, 480, 500, 520, 700, 950, 998):
            assert p[k] == pytest.approx(CLOSED_FORM[density](k, lam, params), rel=1e-9, abs=1e-300), (k, params)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_laplace_peaks_where_snr_is_e_to_the_mu():
    mu = 0.3
    d = create_diffusion(noise_schedule="cosine", timestep_sampling="laplace", laplace=(mu, 0.5))
    lam = np.log(d.snr)
    assert abs(int(np.argmax(d.loss.timestep_probs)) - int(np.argmin(np.abs(lam - mu)))) <= 1


@pytest.mark.parametrize("density", DENSITIES)
def test_draws_follow_the_density(density):
    d = create_diffusion(noise_schedule="cosine", timestep_sampling=density)
    t = d.sample_timesteps(200_000, generator=torch.Generator().manual_seed(0)).numpy()
    bins = np.linspace(0, 1000, 21).astype(int)  # 20 bins of 50 steps
    expected = np.array([d.loss.timestep_probs[a:b].sum() for a, b in zip(bins[:-1], bins[1:], strict=True)])
    keep = expected * len(t) > 20
    observed = np.bincount(np.digitize(t, bins[1:-1]), minlength=20)
    chi2 = ((observed[keep] - len(t) * expected[keep]) ** 2 / (len(t) * expected[keep])).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


@pytest.mark.parametrize("density", DENSITIES)
def test_the_uniform_objective_has_the_uniform_loss_mean_on_a_fixed_model(density):
    """With objective 'uniform' the loss is reweighted by 1/(T·p_t): its expectation over the density equals the
    uniform-density loss, and the 'resampled' reading's does not (unless the density is uniform). Exact
    expectations over all T steps."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(1, 1, 4, 4, generator=g) * 2 - 1, torch.randn(1, 1, 4, 4, generator=g)
    model = lambda x, t, **kw: 0.3 * x  # noqa: E731  a fixed, imperfect model
    t = torch.arange(1000)

    def expected_loss(**kw) -> float:
        d = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="snr", learn_sigma=False, **kw)
        loss = d.training_losses(model, x0.expand(1000, -1, -1, -1), t, noise=noise.expand(1000, -1, -1, -1))
        return float((torch.as_tensor(d.loss.timestep_probs) * loss["loss"].double()).sum())

    uniform = expected_loss()
    assert expected_loss(timestep_sampling=density, timestep_objective="uniform") == pytest.approx(uniform, rel=1e-6)
    resampled = expected_loss(timestep_sampling=density)
    if density == "uniform":
        assert resampled == uniform
    else:
        assert resampled != pytest.approx(uniform, rel=1e-2)


@pytest.mark.parametrize("density", ["logit_normal", "laplace"])
def test_the_tables_are_scipy_stats_cdfs_to_the_bit(density):
    """p_t to the bit as scipy.stats' CDFs give it (what the committed studies trained with), so every draw of t
    stays the same."""
    for params in (DOCUMENTED[density], OTHER[density]):
        d = create_diffusion(noise_schedule="cosine", diffusion_steps=T, timestep_sampling=density, **{density: params})
        if density == "logit_normal":
            edges = special.logit(np.arange(T + 1) / T)  # −∞ … +∞
            expected = np.diff(stats.norm.cdf(edges, loc=params[0], scale=params[1]))
        else:
            lam = np.log(d.alphas_cumprod / (1 - d.alphas_cumprod))
            edges = np.concatenate([[math.inf], (lam[:-1] + lam[1:]) / 2, [-math.inf]])
            cdf = stats.laplace(loc=params[0], scale=params[1]).cdf
            expected = cdf(edges[:-1]) - cdf(edges[1:])
        np.testing.assert_array_equal(d.loss.timestep_probs, expected)
