"""Training timestep densities: each p_t against its closed form, draws that follow p_t, and the two objectives."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffusion import create_diffusion


def test_logit_normal_mass_is_the_normal_mass_of_each_logit_interval():
    """P(t = k) = Φ((logit((k + 1)/T) − m)/s) − Φ((logit(k/T) − m)/s), written out with math.erf."""
    T, m, s = 1000, -0.5, 1.2
    p = create_diffusion(diffusion_steps=T, timestep_sampling="logit_normal", logit_normal=(m, s)).timestep_probs
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    lg = lambda u: math.log(u / (1 - u))  # noqa: E731
    for k in (1, 50, 500, 950, 998):
        assert p[k] == pytest.approx(phi((lg((k + 1) / T) - m) / s) - phi((lg(k / T) - m) / s), rel=1e-9)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_laplace_mass_is_the_laplace_mass_of_each_log_snr_interval():
    """λ_t = log SNR_t; step t owns λ between the midpoints with its neighbours. Laplace CDF written out."""
    mu, b = 0.3, 0.5
    d = create_diffusion(noise_schedule="cosine", timestep_sampling="laplace", laplace=(mu, b))
    lam = np.log(d.alphas_cumprod / (1 - d.alphas_cumprod))
    cdf = lambda x: 0.5 * math.exp((x - mu) / b) if x < mu else 1 - 0.5 * math.exp(-(x - mu) / b)  # noqa: E731
    for k in (300, 480, 500, 520, 700):
        hi, lo = (lam[k - 1] + lam[k]) / 2, (lam[k] + lam[k + 1]) / 2
        assert d.timestep_probs[k] == pytest.approx(cdf(hi) - cdf(lo), rel=1e-9)
    assert d.timestep_probs.sum() == pytest.approx(1.0, abs=1e-12)
    # Peaked where SNR = e^μ: the most likely step is the one whose λ is nearest μ.
    assert abs(int(np.argmax(d.timestep_probs)) - int(np.argmin(np.abs(lam - mu)))) <= 1


@pytest.mark.parametrize("density", ["logit_normal", "laplace"])
def test_draws_follow_the_density(density):
    d = create_diffusion(noise_schedule="cosine", timestep_sampling=density)
    t = d.sample_timesteps(200_000, generator=torch.Generator().manual_seed(0)).numpy()
    bins = np.linspace(0, 1000, 21).astype(int)  # 20 bins of 50 steps
    expected = np.array([d.timestep_probs[a:b].sum() for a, b in zip(bins[:-1], bins[1:], strict=True)])
    keep = expected * len(t) > 20
    observed = np.bincount(np.digitize(t, bins[1:-1]), minlength=20)
    chi2 = ((observed[keep] - len(t) * expected[keep]) ** 2 / (len(t) * expected[keep])).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


def test_the_uniform_objective_has_the_uniform_loss_mean_on_a_fixed_model():
    """With objective 'uniform' the loss is reweighted by 1/(T·p_t): its expectation over the density equals the
    uniform-density loss, and the 'resampled' reading's does not. Exact expectations over all T steps."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(1, 1, 4, 4, generator=g) * 2 - 1, torch.randn(1, 1, 4, 4, generator=g)
    model = lambda x, t, **kw: 0.3 * x  # noqa: E731  a fixed, imperfect model
    t = torch.arange(1000)

    def expected_loss(**kw) -> float:
        d = create_diffusion(noise_schedule="cosine", prediction="x0", weighting="snr", learn_sigma=False, **kw)
        loss = d.training_losses(model, x0.expand(1000, -1, -1, -1), t, noise=noise.expand(1000, -1, -1, -1))
        return float((torch.as_tensor(d.timestep_probs) * loss["loss"].double()).sum())

    uniform = expected_loss()
    for density in ("logit_normal", "laplace"):
        assert expected_loss(timestep_sampling=density, timestep_objective="uniform") == pytest.approx(
            uniform, rel=1e-6
        )
        assert expected_loss(timestep_sampling=density) != pytest.approx(uniform, rel=1e-2)
