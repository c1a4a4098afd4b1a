"""EDM2's learned uncertainty: zero at the start, and trained alone it finds u(λ) = log of the loss at each level."""

import math

import torch

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
