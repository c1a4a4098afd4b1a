"""Parameterisation round trips, posterior closed forms, the variational-bound term and timestep sampling."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from diffusion import create_diffusion
from diffusion.loss import discretized_gaussian_log_likelihood, normal_kl


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
def test_x0_recovered_from_eps_and_from_v(schedule):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(16, 2, 3, 3, generator=g), torch.randn(16, 2, 3, 3, generator=g)
    t = torch.linspace(0, 999, 16).long()
    for prediction in ["eps", "x0", "v"]:
        d = create_diffusion(noise_schedule=schedule, prediction=prediction, weighting="min_snr")
        x_t = d.q_sample(x0, t, noise)
        x0_hat, eps_hat = d.to_x0_eps(d.target(x0, t, noise), x_t, t)
        # Near t = T-1 on cosine √ᾱ ~ 1e-5, so x0 from ε amplifies float32 rounding of x_t: compare where √ᾱ > 1e-2.
        ok = torch.as_tensor(np.sqrt(d.alphas_cumprod))[t] > 1e-2
        torch.testing.assert_close(x0_hat[ok], x0[ok], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(eps_hat[t < 999], noise[t < 999], rtol=1e-3, atol=2e-3)


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1}|x_t, x0) ∝ N(x_{t-1}; √ᾱ_{t-1}·x0, 1−ᾱ_{t-1})·N(x_t; √α_t·x_{t-1}, β_t), multiplied out by hand."""
    d = create_diffusion(noise_schedule="cosine")
    g = torch.Generator().manual_seed(2)
    x0, x_t = torch.randn(5, 1, 2, 2, generator=g), torch.randn(5, 1, 2, 2, generator=g)
    t = torch.tensor([1, 5, 300, 700, 998])
    mean, var, log_var = d.q_posterior(x0, x_t, t)
    for i, ti in enumerate(t.tolist()):
        a_prev, beta = d.alphas_cumprod[ti - 1], d.betas[ti]
        precision = 1 / (1 - a_prev) + (1 - beta) / beta
        m = (math.sqrt(a_prev) * x0[i] / (1 - a_prev) + math.sqrt(1 - beta) * x_t[i] / beta) / precision
        torch.testing.assert_close(mean[i], m.float(), rtol=1e-4, atol=1e-5)
        assert var[i].item() == pytest.approx(1 / precision, rel=1e-5)
        assert log_var[i].item() == pytest.approx(-math.log(precision), rel=1e-5)
    # At t = 0 the posterior collapses onto x0.
    m0, v0, _ = d.q_posterior(x0, x_t, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(m0, x0)
    torch.testing.assert_close(v0, torch.zeros_like(v0))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_vb_is_zero_for_the_true_posterior_and_positive_otherwise(prediction):
    d = create_diffusion(noise_schedule="linear", prediction=prediction, learn_sigma=True)
    g = torch.Generator().manual_seed(3)
    x0, noise = torch.rand(6, 2, 4, 4, generator=g) * 2 - 1, torch.randn(6, 2, 4, 4, generator=g)
    t = torch.tensor([1, 2, 50, 400, 800, 999])

    def true_model(var_value):
        def model(x_t, t_):
            # The true target, and v = -1: log σ² = log β̃_t, the true posterior variance (t ≥ 1).
            return torch.cat([d.target(x0, t_, noise), torch.full_like(x_t, var_value)], dim=1)

        return model

    out = d.training_losses(true_model(-1.0), x0, t, noise=noise)
    torch.testing.assert_close(out["vb"], torch.zeros(6), atol=1e-5, rtol=0)
    assert torch.all(out["mse"] < 1e-8)
    wrong = d.training_losses(true_model(0.5), x0, t, noise=noise)
    # Late steps have β̃_t ≈ β_t, so any variance in the learned range is nearly right there.
    assert torch.all(wrong["vb"][:3] > 1e-4) and torch.all(wrong["vb"] >= 0)
    torch.testing.assert_close(wrong["loss"], wrong["weighted_mse"] + wrong["vb"])


def test_vb_trains_only_the_variance():
    """The hybrid loss's bound term sees a stop-gradient mean: its gradient reaches only the variance output."""
    d = create_diffusion(prediction="eps", learn_sigma=True)
    mean_param = torch.zeros(1, requires_grad=True)
    var_param = torch.zeros(1, requires_grad=True)

    def model(x_t, t):
        return torch.cat([x_t * 0 + mean_param, x_t * 0 + var_param], dim=1)

    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    out = d.training_losses(model, x0, torch.tensor([0, 3, 300, 900]))
    out["vb"].sum().backward()
    assert mean_param.grad.abs().item() == 0.0 and var_param.grad.abs().item() > 0


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    m1, m2, lv1, lv2 = (torch.randn(100, generator=g) for _ in range(4))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(m1, (0.5 * lv1).exp()), torch.distributions.Normal(m2, (0.5 * lv2).exp())
    )
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-5, atol=1e-6)


def test_discretized_likelihood_sums_to_one_over_the_256_levels():
    levels = torch.linspace(-1, 1, 256).reshape(256, 1)
    for mean, log_scale in [(0.0, -3.0), (0.7, -5.0), (-0.95, -1.0), (0.2, 0.5)]:
        ll = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale))
        assert ll.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_uniform_timesteps_cover_all_steps_evenly():
    d = create_diffusion(diffusion_steps=100)
    t = d.sample_timesteps(50_000, generator=torch.Generator().manual_seed(5))
    counts = np.bincount(t.numpy(), minlength=100)
    assert t.min() >= 0 and t.max() <= 99
    assert stats.chisquare(counts).pvalue > 1e-4
