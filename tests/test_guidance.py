"""Classifier-free guidance: exact at scale 1, batched, channel- and interval-restricted, and pointing the right way."""

import math

import pytest
import torch

from diffusion import classifier_free_guidance, create_diffusion, get_sampler

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

    out = classifier_free_guidance(model, 4.0, null_class=7)(torch.zeros(3, 2, 1, 1), torch.zeros(3).long(),
                                                             torch.tensor([1, 2, 3]))  # fmt: skip
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
        out = get_sampler(sampler)(guided, noise, d, steps=50, model_kwargs={"y": y})
        means[scale] = (out[:n].mean().item(), out[n:].mean().item())
    tol = 5 * S / math.sqrt(n * 16) + 0.005
    assert abs(means[1.0][0] - MUS[0]) < tol and abs(means[1.0][1] - MUS[1]) < tol
    # Same noise at every scale, so the shifts carry no sampling noise of their own.
    for lower, higher in [(1.0, 2.0), (2.0, 4.0)]:
        assert means[higher][1] > means[lower][1] + 0.02
        assert means[higher][0] < means[lower][0] - 0.02
