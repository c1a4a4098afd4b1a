"""Schedules against their published closed forms, and DiT/ADM's respacing rule."""

import math

import numpy as np
import pytest

from diffusion import betas_for_schedule, create_diffusion, space_timesteps


def test_linear_matches_adm_endpoints_and_scales_with_T():
    b = betas_for_schedule("linear", 1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(b), (0.02 - 1e-4) / 999)
    b4000 = betas_for_schedule("linear", 4000)  # ADM scales both ends by 1000/T
    assert b4000[0] == pytest.approx(0.25e-4) and b4000[-1] == pytest.approx(0.005)


def test_cosine_alphas_cumprod_is_the_closed_form_until_clipping():
    T, s = 1000, 0.008
    acp = create_diffusion(noise_schedule="cosine", diffusion_steps=T).alphas_cumprod

    def f(tau):
        return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2

    expected = np.array([f((t + 1) / T) / f(0) for t in range(T)])
    betas = betas_for_schedule("cosine", T)
    unclipped = np.flatnonzero(betas < 0.999)
    first_clipped = unclipped[-1] + 1
    assert first_clipped > 990 and np.all(betas[first_clipped:] == 0.999)
    np.testing.assert_allclose(acp[:first_clipped], expected[:first_clipped], rtol=1e-10)


def test_scaled_linear_is_linear_in_sqrt_beta():
    b = betas_for_schedule("scaled_linear", 1000)
    assert b[0] == pytest.approx(0.00085) and b[-1] == pytest.approx(0.012)
    assert np.allclose(np.diff(np.sqrt(b)), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999)


def test_alphas_cumprod_is_float64_length_T_even_when_respaced():
    d = create_diffusion(timestep_respacing="250", diffusion_steps=1000)
    assert d.alphas_cumprod.dtype == np.float64 and d.alphas_cumprod.shape == (1000,)
    assert len(d.timesteps) == 250
    # DiT's linear schedule, β from 1e-4 to 0.02: ᾱ_0 = 1 − 1e-4; ᾱ_999, the product of 1 − β over all 1000 steps
    # computed with a plain loop, is 4.0358298e-5.
    assert d.alphas_cumprod[0] == pytest.approx(0.9999, rel=1e-12)
    assert d.alphas_cumprod[-1] == pytest.approx(4.0358298e-5, rel=1e-7)


def test_respacing_rules():
    assert space_timesteps(1000, "") == list(range(1000))
    steps = space_timesteps(1000, "250")
    assert len(steps) == 250 and steps[0] == 0 and steps[-1] == 999
    assert np.all(np.diff(steps) >= 4) and np.all(np.diff(steps) <= 5)  # 999/249 ≈ 4.01 apart
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]  # two sections of 5 steps each
    assert space_timesteps(100, 100) == list(range(100))
    assert space_timesteps(50, "1") == [0]
    # DiT accumulates the fractional stride (999/20 ten times is 499.49999…, which rounds to 499, not 500).
    assert space_timesteps(1000, "21")[10] == 499
