"""Every target × weighting pair: the loss equals the hand-derived w(SNR_t)·mean(target²) against a zero model."""

import math

import numpy as np
import pytest
import torch

from diffusion import create_diffusion, loss_weight

GAMMA = 5.0
TS = [0, 10, 100, 250, 500, 750, 900, 999]

# w on the MSE of each target, written out per cell of the paper's table (DESIGN.md section 2).
HAND = {
    ("const", "x0"): lambda r: 1.0,
    ("const", "eps"): lambda r: 1 / r,
    ("const", "v"): lambda r: 1 / (r + 1),
    ("snr", "x0"): lambda r: r,
    ("snr", "eps"): lambda r: 1.0,
    ("snr", "v"): lambda r: r / (r + 1),
    ("max_snr", "x0"): lambda r: max(r, GAMMA),
    ("max_snr", "eps"): lambda r: max(r, GAMMA) / r,
    ("max_snr", "v"): lambda r: max(r, GAMMA) / (r + 1),
    ("min_snr", "x0"): lambda r: min(r, GAMMA),
    ("min_snr", "eps"): lambda r: min(r, GAMMA) / r,
    ("min_snr", "v"): lambda r: min(r, GAMMA) / (r + 1),
    ("soft_min_snr", "x0"): lambda r: r * GAMMA / (r + GAMMA),
    ("soft_min_snr", "eps"): lambda r: GAMMA / (r + GAMMA),
    ("soft_min_snr", "v"): lambda r: r * GAMMA / ((r + GAMMA) * (r + 1)),
    ("p2", "x0"): lambda r: r / (1 + r),
    ("p2", "eps"): lambda r: 1 / (1 + r),  # Choi et al.: λ = 1/(k + SNR)^γ on the ε-MSE, k = γ = 1
    ("p2", "v"): lambda r: r / (1 + r) ** 2,
    # EDM: (σ² + σ_d²)/(σ·σ_d)² on the D = x̂0 MSE with σ² = 1/SNR, σ_d = 0.5, written out in σ.
    ("edm", "x0"): lambda r: (1 / r + 0.25) / (1 / r * 0.25),
    ("edm", "eps"): lambda r: (1 / r + 0.25) / (1 / r * 0.25) / r,
    ("edm", "v"): lambda r: (1 / r + 0.25) / (1 / r * 0.25) / (r + 1),
    # Debiased: 1/√SNR on the ε-MSE.
    ("debiased", "eps"): lambda r: 1 / math.sqrt(r),
    ("debiased", "x0"): lambda r: r / math.sqrt(r),
    ("debiased", "v"): lambda r: r / math.sqrt(r) / (r + 1),
    # Sigmoid: sigmoid(b − log SNR) on the ε-MSE, b = −3 (SiD2).
    ("sigmoid", "eps"): lambda r: 1 / (1 + math.exp(math.log(r) + 3)),
    ("sigmoid", "x0"): lambda r: r / (1 + math.exp(math.log(r) + 3)),
    ("sigmoid", "v"): lambda r: r / (1 + math.exp(math.log(r) + 3)) / (r + 1),
}


def independent_alphas_cumprod(schedule: str, T: int = 1000) -> np.ndarray:
    if schedule == "linear":
        betas = np.linspace(1e-4, 0.02, T)
    else:

        def f(tau):
            return math.cos((tau + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - f((t + 1) / T) / f(t / T), 0.999) for t in range(T)])
    acp, out = 1.0, []
    for b in betas:
        acp *= 1 - b
        out.append(acp)
    return np.array(out)


@pytest.mark.filterwarnings("ignore:.*diverged")  # ε with const/max_snr: the warning is tested in test_bad_input
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("weighting,prediction", sorted(HAND))
def test_loss_is_hand_weight_times_target_energy(schedule, weighting, prediction):
    kw = dict(noise_schedule=schedule, prediction=prediction, weighting=weighting, snr_gamma=GAMMA)
    d = create_diffusion(**kw, learn_sigma=False)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(TS), 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(len(TS), 3, 4, 4, generator=g)
    t = torch.tensor(TS)
    out = d.training_losses(lambda x, t_, **kw: torch.zeros_like(x), x0, t, noise=noise)

    acp = independent_alphas_cumprod(schedule)
    for i, ti in enumerate(TS):
        a = acp[ti]
        target = {"eps": noise[i], "x0": x0[i], "v": math.sqrt(a) * noise[i] - math.sqrt(1 - a) * x0[i]}[prediction]
        energy = (target.double() ** 2).mean().item()
        expected = HAND[(weighting, prediction)](a / (1 - a)) * energy
        assert out["mse"][i].item() == pytest.approx(energy, rel=1e-5)
        assert out["loss"][i].item() == pytest.approx(expected, rel=1e-5), (ti, weighting, prediction)
    assert out["loss"].shape == (len(TS),)


def test_min_snr_clamps_exactly_where_snr_crosses_gamma():
    snr = np.array([0.1, 1.0, 4.999, 5.0, 5.001, 100.0])
    np.testing.assert_array_equal(loss_weight("min_snr", snr, "x0", 5.0), [0.1, 1.0, 4.999, 5.0, 5.0, 5.0])
    # The wrongly copied v-form min(SNR + 1, γ)/(SNR + 1) differs from ours wherever SNR < γ ≤ SNR + 1 or SNR + 1 ≤ γ.
    ours = loss_weight("min_snr", snr, "v", 5.0)
    wrong = np.minimum(snr + 1, 5.0) / (snr + 1)
    assert not np.allclose(ours, wrong)
    np.testing.assert_allclose(ours, np.minimum(snr, 5.0) / (snr + 1))


def test_edm_with_unit_sigma_data_is_the_v_mse():
    """σ_d = 1: w_x0 = SNR + 1, so on the v target the weight is exactly 1 (DESIGN.md §4b)."""
    snr = np.logspace(-4, 4, 9)
    np.testing.assert_allclose(loss_weight("edm", snr, "v", sigma_data=1.0), np.ones(9), rtol=1e-12)
