"""Every weighting in the registry × every target: the loss equals the hand-derived w(SNR_t)·mean(target²) against a
zero model, at the documented parameters and at others. A registry entry or parameter without a case here fails."""

import math

import numpy as np
import pytest
import torch

from diffusion import GaussianDiffusion, Loss, LossConfig, betas_for_schedule, loss_weight
from diffusion.weighting import PREDICTIONS, WEIGHTING_PARAMS, WEIGHTINGS, weighting_params

TS = [0, 10, 100, 250, 500, 750, 900, 999]

# w on the MSE of each target, with r = SNR and p the weighting's parameters, written out per cell of the table in
# docs/diffusion.md ("Weightings"): w_x0 on the x0-MSE, w_x0/SNR on the ε-MSE, w_x0/(SNR + 1) on the v-MSE.
HAND = {
    ("const", "x0"): lambda r, p: 1.0,
    ("const", "eps"): lambda r, p: 1 / r,
    ("const", "v"): lambda r, p: 1 / (r + 1),
    ("snr", "x0"): lambda r, p: r,
    ("snr", "eps"): lambda r, p: 1.0,
    ("snr", "v"): lambda r, p: r / (r + 1),
    ("max_snr", "x0"): lambda r, p: max(r, p["snr_gamma"]),
    ("max_snr", "eps"): lambda r, p: max(r, p["snr_gamma"]) / r,
    ("max_snr", "v"): lambda r, p: max(r, p["snr_gamma"]) / (r + 1),
    ("min_snr", "x0"): lambda r, p: min(r, p["snr_gamma"]),
    ("min_snr", "eps"): lambda r, p: min(r, p["snr_gamma"]) / r,
    ("min_snr", "v"): lambda r, p: min(r, p["snr_gamma"]) / (r + 1),
    ("soft_min_snr", "x0"): lambda r, p: r * p["snr_gamma"] / (r + p["snr_gamma"]),
    ("soft_min_snr", "eps"): lambda r, p: p["snr_gamma"] / (r + p["snr_gamma"]),
    ("soft_min_snr", "v"): lambda r, p: r * p["snr_gamma"] / ((r + p["snr_gamma"]) * (r + 1)),
    ("p2", "x0"): lambda r, p: r / (1 + r),
    ("p2", "eps"): lambda r, p: 1 / (1 + r),  # Choi et al.: λ = 1/(k + SNR)^γ on the ε-MSE, k = γ = 1
    ("p2", "v"): lambda r, p: r / (1 + r) ** 2,
    # EDM: (σ² + σ_d²)/(σ·σ_d)² on the D = x̂0 MSE with σ² = 1/SNR, written out in σ.
    ("edm", "x0"): lambda r, p: (1 / r + p["sigma_data"] ** 2) / (1 / r * p["sigma_data"] ** 2),
    ("edm", "eps"): lambda r, p: (1 / r + p["sigma_data"] ** 2) / (1 / r * p["sigma_data"] ** 2) / r,
    ("edm", "v"): lambda r, p: (1 / r + p["sigma_data"] ** 2) / (1 / r * p["sigma_data"] ** 2) / (r + 1),
    # Debiased: 1/√SNR on the ε-MSE.
    ("debiased", "eps"): lambda r, p: 1 / math.sqrt(r),
    ("debiased", "x0"): lambda r, p: r / math.sqrt(r),
    ("debiased", "v"): lambda r, p: r / math.sqrt(r) / (r + 1),
    # Sigmoid: sigmoid(b − log SNR) on the ε-MSE.
    ("sigmoid", "eps"): lambda r, p: 1 / (1 + math.exp(math.log(r) - p["sigmoid_bias"])),
    ("sigmoid", "x0"): lambda r, p: r / (1 + math.exp(math.log(r) - p["sigmoid_bias"])),
    ("sigmoid", "v"): lambda r, p: r / (1 + math.exp(math.log(r) - p["sigmoid_bias"])) / (r + 1),
}
# Every weighting parameter: its documented default (docs/diffusion.md, docs/weightings.md) and another value.
DOCUMENTED = {"snr_gamma": 5.0, "sigma_data": 0.5, "sigmoid_bias": -3.0}
OTHER = {"snr_gamma": 2.0, "sigma_data": 1.0, "sigmoid_bias": 1.5}


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


def test_every_case_is_a_registry_entry_and_every_parameter_has_values():
    assert set(HAND) <= {(w, p) for w in WEIGHTINGS for p in PREDICTIONS}, "a case for a weighting that is gone"
    assert set(DOCUMENTED) == set(OTHER) == set(WEIGHTING_PARAMS), "give every weighting parameter two values here"


@pytest.mark.filterwarnings("ignore:.*diverged")  # ε with const/max_snr: the warning is tested in test_bad_input
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_loss_is_hand_weight_times_target_energy(schedule, weighting, prediction):
    assert (weighting, prediction) in HAND, f"no hand-derived weight for {weighting} × {prediction}; add it to HAND"
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(TS), 3, 4, 4, generator=g) * 2 - 1
    noise = torch.randn(len(TS), 3, 4, 4, generator=g)
    t = torch.tensor(TS)
    acp = independent_alphas_cumprod(schedule)
    own = list(weighting_params(weighting, {}))  # the parameters this weighting takes
    cases = [({}, {k: DOCUMENTED[k] for k in own})]  # none given: the table's defaults are the documented values
    if own:
        cases.append(({k: OTHER[k] for k in own},) * 2)
    for given, params in cases:
        config = LossConfig(prediction=prediction, weighting=weighting, weighting_params=given)
        diffusion = GaussianDiffusion(betas_for_schedule(schedule, 1000), prediction=prediction, learn_sigma=False)
        out = Loss(config, diffusion)(lambda x, t_, **kw: torch.zeros_like(x), x0, t, noise=noise)
        for i, ti in enumerate(TS):
            a = acp[ti]
            target = {"eps": noise[i], "x0": x0[i], "v": math.sqrt(a) * noise[i] - math.sqrt(1 - a) * x0[i]}
            energy = (target[prediction].double() ** 2).mean().item()
            expected = HAND[(weighting, prediction)](a / (1 - a), params) * energy
            assert out["mse"][i].item() == pytest.approx(energy, rel=1e-5)
            assert out["loss"][i].item() == pytest.approx(expected, rel=1e-5), (ti, params)
        assert torch.equal(out["loss"], out["weighted_mse"]) and out["loss"].shape == (len(TS),)


@pytest.mark.parametrize("name", list(WEIGHTING_PARAMS))
def test_each_parameter_moves_the_weights_of_exactly_its_weightings(name):
    snr = np.logspace(-3, 3, 13)
    for weighting in WEIGHTINGS:
        takes = name in weighting_params(weighting, {})
        moved = loss_weight(weighting, snr, "x0", **{name: OTHER[name]})
        assert takes == (not np.array_equal(moved, loss_weight(weighting, snr, "x0"))), weighting
        if not takes:  # a flag of another weighting is checked but not taken; the config refuses it outright
            with pytest.raises(ValueError, match=f"takes no parameter '{name}'"):
                LossConfig(weighting=weighting, weighting_params={name: OTHER[name]})


def test_min_snr_clamps_exactly_where_snr_crosses_gamma():
    snr = np.array([0.1, 1.0, 4.999, 5.0, 5.001, 100.0])
    np.testing.assert_array_equal(loss_weight("min_snr", snr, "x0", snr_gamma=5.0), [0.1, 1.0, 4.999, 5.0, 5.0, 5.0])
    # The wrongly copied v-form min(SNR + 1, γ)/(SNR + 1) differs from ours wherever SNR < γ ≤ SNR + 1 or SNR + 1 ≤ γ.
    ours = loss_weight("min_snr", snr, "v", snr_gamma=5.0)
    wrong = np.minimum(snr + 1, 5.0) / (snr + 1)
    assert not np.allclose(ours, wrong)
    np.testing.assert_allclose(ours, np.minimum(snr, 5.0) / (snr + 1))


def test_edm_with_unit_sigma_data_is_the_v_mse():
    """σ_d = 1: w_x0 = SNR + 1/σ_d² = SNR + 1, and ‖v − v̂‖² = (SNR + 1)·‖x0 − x̂0‖², so the weight on the v-MSE is
    exactly 1 (docs/weightings.md, the edm row)."""
    snr = np.logspace(-4, 4, 9)
    np.testing.assert_allclose(loss_weight("edm", snr, "v", sigma_data=1.0), np.ones(9), rtol=1e-12)
