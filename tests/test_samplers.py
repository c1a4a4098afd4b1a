"""Samplers against the exact denoiser of Gaussian data N(μ, s²I), whose samples must be N(μ, s²)."""

import math

import numpy as np
import pytest
import torch

from diffusion import create_diffusion, get_sampler
from diffusion.samplers import edm_timesteps

MU, S = 0.3, 0.5
USUAL_STEPS = {"ddpm": 250, "ddim": 50, "heun": 50, "dpm++": 20}
NFE = {"ddpm": lambda n: n, "ddim": lambda n: n, "heun": lambda n: 2 * n - 1, "dpm++": lambda n: n}
# Discretisation error on the variance at N steps, by each solver's order: C/N for DDPM and DDIM (1st order),
# C/N² for Heun and DPM-Solver++ (2nd order; the order itself is tested below). C is set from the worst case
# (linear schedule) with some margin; at 4× the steps every sampler is within 1.5% of s².
ALLOWANCE = {
    "ddpm": lambda n: 6 / n,
    "ddim": lambda n: 6 / n,
    "heun": lambda n: 40 / n**2,
    "dpm++": lambda n: 40 / n**2,
}


def stats_tolerance(n: int) -> tuple[float, float]:
    """5-sigma bounds for the sample mean (s/√n) and the relative error of the sample variance (√(2/n))."""
    return 5 * S / math.sqrt(n), 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", ["ddpm", "ddim", "heun", "dpm++"])
def test_sampler_reproduces_gaussian_data(oracle, name, prediction, schedule):
    d = create_diffusion(noise_schedule=schedule, prediction=prediction, weighting="min_snr", learn_sigma=False)
    model = oracle(d.alphas_cumprod, prediction, [MU], S)
    torch.manual_seed(0)
    x = torch.randn(8192, 1, 4, 4)
    steps = USUAL_STEPS[name]
    out = get_sampler(name)(model, x, d, steps=steps)
    mean_tol, var_tol = stats_tolerance(out.numel())
    # The chain starts from N(0, I) where the true marginal has mean √ᾱ_max·μ (≤ μ/80): a small mean allowance.
    assert abs(out.mean().item() - MU) < mean_tol + 0.005
    assert abs(out.var().item() / S**2 - 1) < var_tol + ALLOWANCE[name](steps)
    assert model.calls == NFE[name](steps)


@pytest.mark.parametrize("variance", ["large", "small", "learned"])
def test_ddpm_variances_on_the_full_chain(oracle, variance):
    d = create_diffusion(noise_schedule="cosine", prediction="eps", learn_sigma=variance == "learned")
    model = oracle(d.alphas_cumprod, "eps", [MU], S, learn_sigma=variance == "learned")
    torch.manual_seed(1)
    out = get_sampler("ddpm")(
        model, torch.randn(4096, 1, 4, 4), d, variance="small" if variance == "small" else "large"
    )
    mean_tol, var_tol = stats_tolerance(out.numel())
    assert abs(out.mean().item() - MU) < mean_tol + 0.005
    assert abs(out.var().item() / S**2 - 1) < var_tol + ALLOWANCE["ddpm"](1000)
    assert model.calls == 1000


def exact_output_law(name, d, model, steps):
    """For a deterministic sampler and a linear oracle, output = A·z + B exactly: read B at z = 0 and A at z = 1."""
    out = get_sampler(name)(model, torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1), d, steps=steps)
    b = out[0].item()
    return b, (out[1].item() - b) ** 2


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name,order", [("ddim", 1), ("heun", 2), ("dpm++", 2)])
def test_convergence_order(oracle, name, order, prediction, schedule):
    """Doubling the steps divides the variance error by ~2^order: an off-by-one or a wrong coefficient breaks it."""
    d = create_diffusion(noise_schedule=schedule, prediction=prediction, learn_sigma=False)
    model = oracle(d.alphas_cumprod, prediction, [MU], S)
    errors = [abs(exact_output_law(name, d, model, n)[1] / S**2 - 1) for n in (20, 40, 80)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    lo, hi = (1.7, 2.3) if order == 1 else (3.3, 5.5)
    assert all(lo < r < hi for r in ratios), (errors, ratios)


def test_ddpm_and_ddim_follow_the_diffusions_respacing(oracle):
    d = create_diffusion(timestep_respacing="ddim25", learn_sigma=False)
    for name in ["ddpm", "ddim"]:
        model = oracle(d.alphas_cumprod, "eps", [MU], S)
        seen = []
        get_sampler(name)(model, torch.randn(2, 1, 2, 2), d, callback=lambda info, seen=seen: seen.append(info["t"]))
        assert seen == list(range(960, -1, -40)) and model.calls == 25


def official_sigma_table(T: int = 1000, C_1: float = 0.001, C_2: float = 0.008) -> np.ndarray:
    """u_j, j = 0..T, of the official Min-SNR EDM wrapper: u_T = 0, u_{j-1} = √((u_j² + 1)/max(ᾱ(j-1)/ᾱ(j), C_1) − 1)
    with ᾱ(j) = sin²(π/2 · j/(T(1 + C_2))) (the cosine schedule, indexed from pure noise)."""

    def alpha_bar(j):
        return math.sin(0.5 * math.pi * j / T / (C_2 + 1)) ** 2

    u = np.zeros(T + 1)
    for j in range(T, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return u


def test_edm_sigma_levels_and_steps_match_the_official_sampler():
    d = create_diffusion(noise_schedule="cosine")
    u = official_sigma_table()
    # Timestep t of our model is u index T-1-t in the official code (c_noise = M - 1 - index).
    np.testing.assert_allclose(d.sigmas, u[:1000][::-1], rtol=1e-6)
    for steps in [18, 30, 50]:
        sigma_min, sigma_max = max(0.002, u[999]), min(80.0, u[0])
        i = np.arange(steps)
        karras = (sigma_max ** (1 / 7) + i / (steps - 1) * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
        official = [999 - int(np.abs(u - s).argmin()) for s in karras]
        assert edm_timesteps(d, steps) == official


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(ValueError, match="ddpm, ddim, heun, dpm\\+\\+"):
        get_sampler("euler")
