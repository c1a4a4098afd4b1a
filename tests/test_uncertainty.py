"""EDM2's learned uncertainty: zero at the start, trained alone it finds u(λ) = log of the loss at each level, and
the Loss divides by e^u and adds u."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from diffusion import GaussianDiffusion, Loss, LossConfig, betas_for_schedule
from diffusion.uncertainty import LogVariance, uncertainty_loss


def test_it_starts_as_the_plain_loss():
    u = LogVariance()(torch.linspace(-10, 10, 7))
    assert torch.equal(u, torch.zeros(7))
    weighted = torch.rand(7)
    assert torch.equal(uncertainty_loss(weighted, u), weighted)


def test_the_optimum_is_the_log_of_the_loss_at_each_level():
    """min_u L·e^{−u} + u is at u = log L. With L(λ) = 0.5·e^{−λ/4} (a loss falling with SNR), Adam on the
    expected objective drives u(λ) to log L(λ) across the levels."""
    torch.manual_seed(0)
    head = LogVariance()
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    lam = torch.linspace(-6, 6, 49)
    target = 0.5 * torch.exp(-lam / 4)
    for _ in range(1500):
        loss = uncertainty_loss(target, head(lam)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    err = (head(lam) - target.log()).abs().max().item()
    assert err < 0.05, err
    assert math.isclose(uncertainty_loss(target, target.log()).mean().item(), (1 + target.log()).mean().item())


@pytest.mark.parametrize("learn_sigma", [False, True])
def test_the_loss_divides_by_e_to_the_u_and_adds_u(learn_sigma):
    """With learned uncertainty the Loss returns loss = weighted_mse/e^u + u (+ vb), u = u(λ_t) of EDM2's features
    c_noise = −λ/8 written out here, outside any autocast; weighted_mse and vb are those of the plain loss."""
    config = LossConfig(prediction="x0", weighting="min_snr", learned_uncertainty=True, uncertainty_seed=3)
    diffusion = GaussianDiffusion(betas_for_schedule("cosine", 1000), "x0", learn_sigma)
    loss = Loss(config, diffusion)
    with torch.no_grad():  # a u that is not zero
        loss.logvar.linear.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
        loss.logvar.linear.bias.fill_(0.2)
    plain = Loss(dataclasses.replace(config, learned_uncertainty=False), diffusion)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 2, 4, 4, generator=g) * 2 - 1, torch.randn(6, 2, 4, 4, generator=g)
    t = torch.tensor([0, 1, 200, 500, 800, 999])

    def model(x, t_):
        return torch.cat([0.5 * x, torch.tanh(x)], 1) if learn_sigma else 0.5 * x

    with torch.autocast("cpu", torch.bfloat16):
        terms = loss(model, x0, t, noise=noise)
    reference = plain(model, x0, t, noise=noise)
    lam = torch.as_tensor(np.log(diffusion.alphas_cumprod / (1 - diffusion.alphas_cumprod)))[t]
    features = math.sqrt(2) * torch.cos(-lam[:, None] / 8 * loss.logvar.freqs.double() + loss.logvar.phases.double())
    u = features @ loss.logvar.linear.weight.double()[0] + loss.logvar.linear.bias.double()
    assert terms["u"].dtype == torch.float32 and not terms["u"].requires_grad
    torch.testing.assert_close(terms["u"].double(), u, rtol=1e-5, atol=1e-6)
    assert torch.equal(terms["weighted_mse"], reference["weighted_mse"])
    expected = reference["weighted_mse"].double() / u.exp() + u + (reference["vb"].double() if learn_sigma else 0)
    torch.testing.assert_close(terms["loss"].double(), expected, rtol=1e-5, atol=1e-6)
    terms["loss"].mean().backward()
    assert loss.logvar.linear.weight.grad.abs().sum() > 0  # u trains through the loss
