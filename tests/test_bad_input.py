"""Every bad input fails at once with one clear message that says what is valid."""

import warnings

import pytest
import torch

from diffusion import classifier_free_guidance, create_diffusion, get_sampler


@pytest.mark.parametrize(
    "kwargs,valid",
    [
        ({"noise_schedule": "quadratic"}, "linear, cosine, scaled_linear"),
        ({"prediction": "score"}, "eps, x0, v"),
        ({"weighting": "minsnr"}, "const, snr, max_snr, min_snr, soft_min_snr, p2"),
        ({"timestep_sampling": "beta"}, "uniform, logit_normal"),
    ],
)
def test_unknown_names_list_the_valid_ones(kwargs, valid):
    with pytest.raises(ValueError, match=f"unknown .*{list(kwargs.values())[0]}.*valid: {valid}$"):
        create_diffusion(**kwargs)


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan")])
def test_gamma_must_be_positive(gamma):
    with pytest.raises(ValueError, match="snr_gamma must be > 0"):
        create_diffusion(weighting="min_snr", snr_gamma=gamma)


@pytest.mark.parametrize("spec", ["1001", "ddim2000", "ddim999", "fifty", "0", "600,600", "ddim1"])
def test_bad_respacing(spec):
    with pytest.raises(ValueError, match="respacing|steps"):
        create_diffusion(timestep_respacing=spec, diffusion_steps=1000)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "scaled_linear"])
def test_a_diffusion_needs_two_steps(schedule):
    with pytest.raises(ValueError, match="diffusion_steps must be >= 2"):
        create_diffusion(noise_schedule=schedule, diffusion_steps=1)


def test_linear_schedule_with_too_few_steps():
    with pytest.raises(ValueError, match="T > 20"):
        create_diffusion(noise_schedule="linear", diffusion_steps=10)


@pytest.mark.parametrize("learn_sigma,channels", [(True, 3), (False, 6), (True, 5)])
def test_wrong_output_channels_for_learn_sigma(learn_sigma, channels):
    d = create_diffusion(learn_sigma=learn_sigma)

    def model(x, t):
        return torch.zeros(x.shape[0], channels, *x.shape[2:])

    expected = 6 if learn_sigma else 3
    with pytest.raises(ValueError, match=f"returned {channels} channels .* expected {expected}"):
        d.training_losses(model, torch.zeros(2, 3, 4, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="channels"):
        get_sampler("ddim")(model, torch.zeros(2, 3, 4, 4), d, steps=5)


@pytest.mark.parametrize("prediction,weighting", [("eps", "const"), ("eps", "max_snr")])
def test_diverging_combination_runs_with_a_warning_citing_the_paper(prediction, weighting):
    with pytest.warns(UserWarning, match="diverged in Hang et al. 2023 .*Fig. 5"):
        d = create_diffusion(prediction=prediction, weighting=weighting, learn_sigma=False)
    loss = d.training_losses(lambda x, t: torch.zeros_like(x), torch.zeros(2, 1, 2, 2), torch.tensor([5, 500]))
    assert torch.isfinite(loss["loss"]).all()


@pytest.mark.parametrize("prediction,weighting", [("x0", "const"), ("eps", "min_snr"), ("v", "max_snr")])
def test_no_warning_for_stable_combinations(prediction, weighting):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_diffusion(prediction=prediction, weighting=weighting)


def test_guidance_interval_needs_the_diffusion_and_an_ordered_interval():
    with pytest.raises(ValueError, match="needs the diffusion"):
        classifier_free_guidance(lambda x, t, y: x, 1.5, 10, sigma_interval=(0.1, 1.0))
    with pytest.raises(ValueError, match="lo <= hi"):
        classifier_free_guidance(lambda x, t, y: x, 1.5, 10, sigma_interval=(2.0, 1.0), diffusion=create_diffusion())
