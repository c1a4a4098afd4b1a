"""Classifier-free guidance: exact at scale 1, batched, channel- and interval-restricted, and pointing the right way."""

import math

import numpy as np
import pytest
import torch

from diffusion import classifier_free_guidance, create_diffusion, get_sampler, timestep_interval_sigmas

MUS, S = [-0.5, 0.5], 0.3  # class 0, class 1; label 2 is the null class


@pytest.fixture
def setup(oracle):
    d = create_diffusion(noise_schedule="cosine", prediction="x0", learn_sigma=False)
    return d, oracle(d.alphas_cumprod, "x0", MUS, S)


def test_scale_one_is_the_conditional_model_exactly(setup):
    d, model = setup
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 1, 4, 4, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])
    t = torch.tensor([0, 10, 200, 500, 800, 999])
    assert torch.equal(classifier_free_guidance(model, 1.0, null_class=2)(x, t, y), model(x, t, y))


def test_one_batched_pass_of_conditional_and_null_labels():
    seen = []

    def model(x, t, y):
        seen.append(y.clone())
        return x * 0 + y.reshape(-1, 1, 1, 1).float()

    guided = classifier_free_guidance(model, 4.0, null_class=7)
    out = guided(torch.zeros(3, 2, 1, 1), torch.zeros(3).long(), torch.tensor([1, 2, 3]))
    assert len(seen) == 1 and seen[0].tolist() == [1, 2, 3, 7, 7, 7]
    # c + (s − 1)(c − u) with c = y, u = 7: y + 3·(y − 7)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([1.0, 2, 3]) + 3 * (torch.tensor([1.0, 2, 3]) - 7))


def test_guidance_only_on_the_first_k_channels_and_variance_from_the_conditional_pass(oracle):
    d = create_diffusion(noise_schedule="cosine", prediction="eps", learn_sigma=True)
    model = oracle(d.alphas_cumprod, "eps", MUS, S, learn_sigma=True)
    x, t, y = torch.randn(4, 4, 2, 2), torch.full((4,), 300), torch.tensor([0, 1, 1, 0])
    cond, uncond = model(x, t, y), model(x, t, torch.full_like(y, 2))
    out = classifier_free_guidance(model, 2.5, null_class=2, channels=3)(x, t, y)
    torch.testing.assert_close(out[:, :3], cond[:, :3] + 1.5 * (cond[:, :3] - uncond[:, :3]))
    assert torch.equal(out[:, 3:], cond[:, 3:])  # 4th latent channel and all 4 variance channels
    out_all = classifier_free_guidance(model, 2.5, null_class=2)(x, t, y)
    torch.testing.assert_close(out_all[:, :4], cond[:, :4] + 1.5 * (cond[:, :4] - uncond[:, :4]))
    assert torch.equal(out_all[:, 4:], cond[:, 4:])


def test_guidance_interval_leaves_other_noise_levels_unguided(setup):
    d, model = setup
    lo, hi = 0.3, 3.0
    t = torch.arange(0, 1000, 37)
    # Inputs near 0 keep p(class | x_t) away from 0 and 1, so the conditional and null answers differ.
    x = 0.05 * torch.randn(len(t), 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.ones(len(t), dtype=torch.long)
    out = classifier_free_guidance(model, 3.0, null_class=2, sigma_interval=(lo, hi), diffusion=d)(x, t, y)
    cond = model(x, t, y)
    sigma = torch.tensor(d.sigmas)[t]
    inside = (sigma >= lo) & (sigma <= hi)
    assert inside.any() and (~inside).any()
    assert torch.equal(out[~inside], cond[~inside])
    assert torch.all((out[inside] - cond[inside]).abs().flatten(1).amax(1) > 0)


def official_sigmas(M: int = 1000) -> np.ndarray:
    """σ of model timestep t as the official sampler (scripts_vit/sampler_edm.py, EDM's "iddpm" discretisation with
    C_1 = 0.001, C_2 = 0.008) builds them: u_M = 0, u_{j−1} = √((u_j² + 1)/max(ᾱ(j−1)/ᾱ(j), C_1) − 1) with
    ᾱ(j) = sin²(π/2 · j/(M·(1 + C_2))); index j is model timestep t = M − 1 − j."""
    alpha_bar = lambda j: math.sin(0.5 * math.pi * j / M / 1.008) ** 2  # noqa: E731
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), 0.001) - 1)
    return np.array(u[:M][::-1])


def test_the_t_form_of_the_interval_is_the_official_one():
    """t:0,800 (the official FID-1.57 run: --t_from 0 --t_to 800) is [σ_0, σ_800] of the official σ table, and
    guides exactly the timesteps 0..800."""
    d = create_diffusion(noise_schedule="cosine", prediction="x0", learn_sigma=False)
    np.testing.assert_allclose(d.sigmas, official_sigmas(), rtol=1e-6)
    lo, hi = timestep_interval_sigmas(0, 800, d)
    assert lo == pytest.approx(0.0064254, rel=1e-4) and hi == pytest.approx(3.12038, rel=1e-5)
    t = torch.arange(1000)
    model = lambda x, t, y: x + y.reshape(-1, 1, 1, 1)  # noqa: E731  the null answer differs from the conditional
    out = classifier_free_guidance(model, 2.1, null_class=0, sigma_interval=(lo, hi), diffusion=d)(
        torch.zeros(1000, 1, 1, 1), t, torch.ones(1000, dtype=torch.long)
    )
    assert torch.nonzero(out.flatten() != 1).flatten().tolist() == list(range(801))


@pytest.mark.parametrize("lo,hi", [(-1, 800), (0, 1000), (800, 0), (0.5, 800)])
def test_a_t_interval_needs_whole_ordered_timesteps(lo, hi):
    with pytest.raises(ValueError, match=r"whole timesteps with 0 <= LO <= HI <= 999"):
        timestep_interval_sigmas(lo, hi, create_diffusion())


@pytest.mark.parametrize("sampler", ["heun", "ddim"])
def test_guidance_pushes_samples_away_from_the_unconditional_mean(setup, sampler):
    """Unconditional data is the mixture ½N(−0.5, s²) + ½N(0.5, s²) with mean 0; guidance > 1 must move class-1
    samples beyond +0.5 and class-0 samples beyond −0.5, further for a larger scale."""
    d, model = setup
    torch.manual_seed(0)
    n = 2048
    y = torch.cat([torch.zeros(n), torch.ones(n)]).long()
    noise, means = torch.randn(2 * n, 1, 4, 4), {}
    for scale in [1.0, 2.0, 4.0]:
        guided = classifier_free_guidance(model, scale, null_class=2)
        out = get_sampler(sampler)(guided, noise, get_sampler(sampler).timesteps(d, 50), d, {"y": y})
        means[scale] = (out[:n].mean().item(), out[n:].mean().item())
    tol = 5 * S / math.sqrt(n * 16) + 0.005
    assert abs(means[1.0][0] - MUS[0]) < tol and abs(means[1.0][1] - MUS[1]) < tol
    # Same noise at every scale, so the shifts carry no sampling noise of their own.
    for lower, higher in [(1.0, 2.0), (2.0, 4.0)]:
        assert means[higher][1] > means[lower][1] + 0.02
        assert means[higher][0] < means[lower][0] - 0.02
