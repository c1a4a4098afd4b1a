"""The Loss (diffusion/loss.py) against formulas written here, and the paths that build it: LossConfig from train.py's
flags, ``Loss.from_args``, and ``create_diffusion(...).training_losses``, which must be the same computation."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from diffusion import GaussianDiffusion, Loss, LossConfig, betas_for_schedule, create_diffusion
from diffusion.timesteps import DENSITIES, DENSITY_PARAMS
from diffusion.weighting import PREDICTIONS, WEIGHTING_PARAMS, WEIGHTINGS
from tests.test_weighting import independent_alphas_cumprod
from training.config import parse_args

TS = torch.tensor([0, 10, 100, 250, 500, 750, 900, 999])


def batch(channels: int = 3):
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(len(TS), channels, 4, 4, generator=g) * 2 - 1
    return x0, torch.randn(x0.shape, generator=g)


def off_by(diffusion: GaussianDiffusion, x0, noise, delta: float):
    """A model whose prediction of its target is off by ``delta`` everywhere (and says 0.3 for the variance)."""

    def model(x_t, t, **kw):
        out = diffusion.target(x0, t, noise) + delta
        return torch.cat([out, torch.full_like(out, 0.3)], 1) if diffusion.learn_sigma else out

    return model


def snr_of(schedule: str) -> np.ndarray:
    acp = independent_alphas_cumprod(schedule)[TS.numpy()]
    return acp / (1 - acp)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_min_snr_is_min_snr_gamma_on_the_x0_error_for_every_target(prediction):
    """Min-SNR-γ weighs the x0-MSE by min(SNR, γ): on the ε-MSE that is min(SNR, γ)/SNR and on the v-MSE
    min(SNR, γ)/(SNR + 1), since ‖ε − ε̂‖² = SNR·‖x0 − x̂0‖² and ‖v − v̂‖² = (SNR + 1)·‖x0 − x̂0‖²."""
    gamma, r = 5.0, snr_of("cosine")
    config = LossConfig(prediction=prediction, weighting="min_snr", weighting_params={"snr_gamma": gamma})
    loss = Loss(config, GaussianDiffusion(betas_for_schedule("cosine", 1000), prediction, learn_sigma=False))
    on_target = {"x0": np.minimum(r, gamma), "eps": np.minimum(r, gamma) / r, "v": np.minimum(r, gamma) / (r + 1)}
    np.testing.assert_allclose(loss.weights[TS.numpy()], on_target[prediction], rtol=1e-9)
    x0, noise = batch()
    terms = loss(off_by(loss.diffusion, x0, noise, 0.1), x0, TS, noise=noise)
    np.testing.assert_allclose(terms["mse"], 0.01, rtol=1e-4)
    np.testing.assert_allclose(terms["weighted_mse"], on_target[prediction] * 0.01, rtol=1e-4)
    # The x0 error the prediction implies: 0.01 for x0, 0.01/SNR for ε, 0.01/(SNR + 1) for v.
    x0_error = {"x0": 0.01 + 0 * r, "eps": 0.01 / r, "v": 0.01 / (r + 1)}[prediction]
    np.testing.assert_allclose(terms["x0_mse"], x0_error, rtol=2e-3)
    ok = x0_error > 1e-9  # at t = 999 of ε, x0 from ε̂ is float32 rounding
    np.testing.assert_allclose(terms["loss"][ok], (np.minimum(r, gamma) * x0_error)[ok], rtol=2e-3)


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_edm_weights_the_denoiser_error_by_edm_lambda(prediction, sigma_data):
    """EDM's λ(σ) = (σ² + σ_d²)/(σ·σ_d)² on ‖D − x0‖², with σ² = 1/SNR (Karras et al. 2022, Table 1)."""
    r = snr_of("linear")
    sigma2 = 1 / r
    lam = (sigma2 + sigma_data**2) / (sigma2 * sigma_data**2)
    config = LossConfig(prediction=prediction, weighting="edm", weighting_params={"sigma_data": sigma_data})
    loss = Loss(config, GaussianDiffusion(betas_for_schedule("linear", 1000), prediction, learn_sigma=False))
    x0, noise = batch()
    terms = loss(off_by(loss.diffusion, x0, noise, 0.1), x0, TS, noise=noise)
    ok = terms["x0_mse"].numpy() > 1e-9
    np.testing.assert_allclose(terms["loss"][ok], (lam * terms["x0_mse"].numpy())[ok], rtol=2e-3)


@pytest.mark.filterwarnings("ignore:.*diverged")
@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_create_diffusion_training_losses_is_the_loss_path(weighting, prediction, learn_sigma):
    """Bit for bit: the keywords of create_diffusion and a LossConfig built by hand make the same loss."""
    kw = dict(noise_schedule="cosine", prediction=prediction, weighting=weighting, learn_sigma=learn_sigma)
    d = create_diffusion(**kw, timestep_sampling="laplace", timestep_objective="uniform", laplace=(0.5, 1.0))
    config = LossConfig(
        prediction=prediction,
        weighting=weighting,
        timestep_sampling="laplace",
        density_params={"laplace": (0.5, 1.0)},
        timestep_objective="uniform",
    )
    assert d.loss.config == config
    loss = Loss(config, GaussianDiffusion(betas_for_schedule("cosine", 1000), prediction, learn_sigma))
    x0, noise = batch()
    model = off_by(d, x0, noise, 0.05)
    ours, theirs = d.training_losses(model, x0, TS, None, noise), loss(model, x0, TS, None, noise)
    assert (
        ours.keys() == theirs.keys() == {"loss", "mse", "weighted_mse", "x0_mse"} | ({"vb"} if learn_sigma else set())
    )
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(d.sample_timesteps(64, "cpu", g1), loss.sample_timesteps(64, "cpu", g2))


def test_train_flags_make_the_config_in_one_call():
    args = parse_args(
        [
            "--prediction",
            "v",
            "--weighting",
            "soft_min_snr",
            "--snr-gamma",
            "3",
            "--sigma-data",
            "2",
            "--timestep-sampling",
            "logit_normal",
            "--logit-normal",
            "0.5",
            "2",
            "--learned-uncertainty",
            "--seed",
            "7",
        ]
    )
    config = LossConfig.from_args(args)
    assert config == LossConfig(
        prediction="v",
        weighting="soft_min_snr",
        weighting_params={"snr_gamma": 3.0},
        timestep_sampling="logit_normal",
        density_params={"logit_normal": (0.5, 2.0)},
        learned_uncertainty=True,
        uncertainty_seed=7,
    )
    assert dict(config.weighting_params) == {"snr_gamma": 3.0}  # σ_d is not soft_min_snr's: checked, left out
    loss = Loss.from_args(args)
    assert loss.config == config and loss.diffusion.loss is loss and loss.logvar is not None
    assert loss.diffusion.learn_sigma is False and loss.diffusion.prediction == "v"
    np.testing.assert_array_equal(loss.diffusion.betas, betas_for_schedule("cosine", 1000))
    # Every flag is checked, also one the chosen weighting does not take (as before the Loss).
    with pytest.raises(ValueError, match="sigma_data must be > 0"):
        LossConfig.from_args(parse_args(["--weighting", "min_snr", "--sigma-data", "0"]))


def test_every_table_parameter_is_a_flag_with_its_default():
    defaults = parse_args([])
    for name, param in {**WEIGHTING_PARAMS, **DENSITY_PARAMS}.items():
        assert getattr(defaults, name) == param.default, name


def test_the_config_is_frozen_hashable_and_checked():
    config = LossConfig(weighting="min_snr")
    assert config.weighting_params == (("snr_gamma", 5.0),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.weighting = "const"
    assert hash(config) == hash(LossConfig(weighting="min_snr", weighting_params={"snr_gamma": 5}))
    assert LossConfig(**dataclasses.asdict(config)) == config  # a record (say, in a checkpoint) rebuilds it
    with pytest.raises(ValueError, match="unknown weighting parameter 'gamma'; valid: " + ", ".join(WEIGHTING_PARAMS)):
        LossConfig(weighting="min_snr", weighting_params={"gamma": 5.0})
    with pytest.raises(ValueError, match="weighting 'const' takes no parameter 'snr_gamma'"):
        LossConfig(weighting="const", weighting_params={"snr_gamma": 5.0})
    with pytest.raises(ValueError, match="laplace takes 2 numbers"):
        LossConfig(timestep_sampling="laplace", density_params={"laplace": (0.0,)})
    with pytest.raises(ValueError, match="unknown timestep sampling 'beta'; valid: " + ", ".join(DENSITIES)):
        LossConfig(timestep_sampling="beta")
    with pytest.raises(TypeError, match="unexpected keyword argument 'gamma'"):
        create_diffusion(weighting="min_snr", gamma=5.0)


def test_the_loss_and_the_diffusion_must_agree_on_the_target():
    with pytest.raises(ValueError, match="the loss's target 'x0' is not the diffusion's 'eps'"):
        Loss(LossConfig(prediction="x0"), GaussianDiffusion(betas_for_schedule("linear", 1000), "eps"))
    bare = GaussianDiffusion(betas_for_schedule("linear", 1000), "eps")
    with pytest.raises(RuntimeError, match="this diffusion has no loss"):
        bare.sample_timesteps(4)


def test_building_a_loss_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    loss = Loss(LossConfig(learned_uncertainty=True), GaussianDiffusion(betas_for_schedule("linear", 1000)))
    assert loss.logvar is not None and torch.equal(torch.rand(3), expected)
    assert math.isclose(sum(p.abs().sum().item() for p in loss.parameters()), 0.0)  # u starts at 0
