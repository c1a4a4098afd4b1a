"""Every registered sampler against the exact denoiser of Gaussian data N(μ, s²I), whose samples must be N(μ, s²);
and the level lists they run on."""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from diffusion import SAMPLERS, create_diffusion, edm_timesteps, get_sampler, respaced_timesteps

MU, S = 0.3, 0.5


@dataclass(frozen=True)
class Case:
    steps: int  # the usual count
    nfe: Callable[[int], int]  # model evaluations over a list of K levels (the documented rule)
    order: int  # of the error in the sample variance


# One row per registered sampler, written out by hand from the papers; a sampler without a row fails below.
CASES = {
    "ddpm": Case(250, lambda k: k, 1),
    "ddim": Case(50, lambda k: k, 1),
    "heun": Case(50, lambda k: 2 * k - 1, 2),
    "dpm++": Case(20, lambda k: k, 2),
}


def allowance(name: str, n: int) -> float:
    """Discretisation error on the variance at n steps: C/n^order, C set from the worst case (linear schedule)
    with some margin."""
    order = CASES[name].order
    return {1: 6, 2: 40}[order] / n**order


def stats_tolerance(n: int) -> tuple[float, float]:
    """5-sigma bounds for the sample mean (s/√n) and the relative error of the sample variance (√(2/n))."""
    return 5 * S / math.sqrt(n), 5 * math.sqrt(2 / n)


def exact_output_law(sampler, d, model, ts, **options) -> tuple[float, float]:
    """Mean and variance of the output. With a linear oracle the output is c + a·z + Σ_k b_k·z_k (z the initial
    noise, z_k the k-th fresh draw), so one batch reads them all: row 0 has no noise (c), row 1 only z = 1 (a),
    row k + 2 only z_k = 1 (b_k)."""
    x = torch.zeros(len(ts) + 2, 1, 1, 1)
    x[1] = 1
    draws = []

    def unit_draw(x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x)
        z[len(draws) + 2] = 1
        draws.append(z)
        return z

    out = sampler(model, x, ts, d, noise_fn=unit_draw, **options).flatten().double()
    return out[0].item(), ((out[1:] - out[0]) ** 2).sum().item()


def test_every_registered_sampler_has_a_case():
    assert list(CASES) == list(SAMPLERS)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_reproduces_gaussian_data(oracle, name, prediction, schedule):
    """On the levels --steps N builds for it, with torch's noise."""
    d = create_diffusion(noise_schedule=schedule, prediction=prediction, weighting="min_snr", learn_sigma=False)
    model = oracle(d.alphas_cumprod, prediction, [MU], S)
    sampler, steps = get_sampler(name), CASES[name].steps
    ts = sampler.timesteps(d, steps)
    torch.manual_seed(0)
    out = sampler(model, torch.randn(8192, 1, 4, 4), ts, d)
    mean_tol, var_tol = stats_tolerance(out.numel())
    # The chain starts from N(0, I) where the true marginal has mean √ᾱ_max·μ (≤ μ/80): a small mean allowance.
    assert abs(out.mean().item() - MU) < mean_tol + 0.005
    assert abs(out.var().item() / S**2 - 1) < var_tol + allowance(name, steps)
    assert len(ts) == steps and model.calls == CASES[name].nfe(steps)


@pytest.mark.parametrize("levels", ["respaced", "edm"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_runs_on_any_level_list(oracle, name, levels):
    """The discretisation is the caller's: each sampler visits exactly the levels it is given, in order, at its
    NFE rule, and lands on the data's law."""
    d = create_diffusion(timestep_respacing="ddim100", noise_schedule="cosine", learn_sigma=False)
    ts = respaced_timesteps(d) if levels == "respaced" else edm_timesteps(d, 100)
    model = oracle(d.alphas_cumprod, "eps", [MU], S)
    seen = []
    get_sampler(name)(model, torch.randn(2, 1, 2, 2), ts, d, callback=lambda info: seen.append(info))
    assert [(info["i"], info["steps"], info["t"]) for info in seen] == [(i, len(ts), t) for i, t in enumerate(ts)]
    assert model.calls == CASES[name].nfe(len(ts))
    mean, var = exact_output_law(get_sampler(name), d, model, ts)
    assert abs(mean - MU) < 0.005 and abs(var / S**2 - 1) < 0.1


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_convergence_order(oracle, name, prediction, schedule):
    """Doubling the levels divides the variance error by ~2^order: an off-by-one or a wrong coefficient breaks it."""
    d = create_diffusion(noise_schedule=schedule, prediction=prediction, learn_sigma=False)
    model = oracle(d.alphas_cumprod, prediction, [MU], S)
    sampler = get_sampler(name)
    errors = [abs(exact_output_law(sampler, d, model, sampler.timesteps(d, n))[1] / S**2 - 1) for n in (20, 40, 80)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    lo, hi = (1.7, 2.3) if CASES[name].order == 1 else (3.3, 5.5)
    assert all(lo < r < hi for r in ratios), (errors, ratios)
    assert errors[0] < allowance(name, 20)


def test_ddpm_variances_bracket_the_datas_on_the_full_chain(oracle):
    """β (large) adds more noise than the exact reverse step and β̃ (small) less; the learned variance, here the
    oracle's output 0, is the log-midpoint of the two. On all 1000 steps each is within 1% of s²."""
    errors = {}
    for variance in ("large", "small", "learned"):
        d = create_diffusion(noise_schedule="cosine", prediction="eps", learn_sigma=variance == "learned")
        model = oracle(d.alphas_cumprod, "eps", [MU], S, learn_sigma=variance == "learned")
        option = "small" if variance == "small" else "large"
        mean, var = exact_output_law(get_sampler("ddpm"), d, model, list(range(999, -1, -1)), variance=option)
        assert abs(mean - MU) < 0.005 and model.calls == 1000
        errors[variance] = var / S**2 - 1
    assert errors["small"] < errors["learned"] < errors["large"]
    assert errors["small"] < 0 < errors["large"] and all(abs(e) < 0.01 for e in errors.values())


def test_ddim_with_eta_one_is_ddpm_with_the_posterior_variance(oracle):
    """η = 1 makes DDIM's step the posterior q(x_s | x_t, x̂0), written another way: with the same draws, the same
    chain, here over respaced (non-adjacent) levels."""
    d = create_diffusion(noise_schedule="cosine", prediction="v", learn_sigma=False)
    model, ts, x = oracle(d.alphas_cumprod, "v", [MU], S), respaced_timesteps(d, "ddim25"), torch.randn(64, 1, 2, 2)
    outs = []
    for name, option in (("ddim", {"eta": 1.0}), ("ddpm", {"variance": "small"})):
        g = torch.Generator().manual_seed(3)
        noise_fn = lambda x, g=g: torch.randn(x.shape, generator=g)  # noqa: E731
        outs.append(get_sampler(name)(model, x, ts, d, noise_fn=noise_fn, **option))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(outs[0], get_sampler("ddim")(model, x, ts, d), atol=0.01)  # η = 0 is another chain


def official_sigma_table(T: int = 1000, C_1: float = 0.001, C_2: float = 0.008) -> np.ndarray:
    """u_j, j = 0..T, of the official Min-SNR EDM wrapper: u_T = 0, u_{j-1} = √((u_j² + 1)/max(ᾱ(j-1)/ᾱ(j), C_1) − 1)
    with ᾱ(j) = sin²(π/2 · j/(T(1 + C_2))) (the cosine schedule, indexed from pure noise)."""

    def alpha_bar(j):
        return math.sin(0.5 * math.pi * j / T / (C_2 + 1)) ** 2

    u = np.zeros(T + 1)
    for j in range(T, 0, -1):
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(alpha_bar(j - 1) / alpha_bar(j), C_1) - 1)
    return u


def test_edm_levels_match_the_official_sampler_with_repeats_merged():
    d = create_diffusion(noise_schedule="cosine")
    u = official_sigma_table()
    # Timestep t of our model is u index T-1-t in the official code (c_noise = M - 1 - index).
    np.testing.assert_allclose(d.sigmas, u[:1000][::-1], rtol=1e-6)
    for steps in [18, 30, 50, 1000]:
        sigma_min, sigma_max = max(0.002, u[999]), min(80.0, u[0])
        i = np.arange(steps)
        karras = (sigma_max ** (1 / 7) + i / (steps - 1) * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
        official = [999 - int(np.abs(u - s).argmin()) for s in karras]  # from noisy to clean, with repeats
        assert edm_timesteps(d, steps) == sorted(set(official), reverse=True)
        assert (len(edm_timesteps(d, steps)) < steps) == (steps == 1000)


def test_respaced_levels_are_dits_from_noisy_to_clean():
    d = create_diffusion(timestep_respacing="ddim25")
    assert respaced_timesteps(d) == list(range(960, -1, -40))  # the diffusion's own respacing
    assert respaced_timesteps(d, 4) == [999, 666, 333, 0]  # N evenly spaced steps, both ends included


def test_unknown_sampler_lists_the_valid_ones():
    with pytest.raises(ValueError, match=re.escape(f"valid: {', '.join(SAMPLERS)}")):
        get_sampler("euler")
