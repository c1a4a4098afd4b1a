"""Every bad input fails at once with one clear message that says what is valid."""

import warnings

import pytest
import torch

from diffusion import classifier_free_guidance, create_diffusion, get_sampler, respaced_timesteps
from models import create_model, load_weights
from tests.reference_forwards import random_official_vit_state_dict


@pytest.mark.parametrize(
    "kwargs,valid",
    [
        ({"noise_schedule": "quadratic"}, "linear, cosine, scaled_linear"),
        ({"prediction": "score"}, "eps, x0, v"),
        ({"weighting": "minsnr"}, "const, snr, max_snr, min_snr, soft_min_snr, p2, edm, debiased, sigmoid"),
        ({"timestep_sampling": "beta"}, "uniform, logit_normal, laplace"),
        ({"timestep_objective": "both"}, "resampled, uniform"),
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
        get_sampler("ddim")(model, torch.zeros(2, 3, 4, 4), respaced_timesteps(d, 5), d)


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


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'DiT-XXL/2'; choose one of: DiT-T/2, .*ViT-XL/4$"):
        create_model("DiT-XXL/2")


@pytest.mark.parametrize("name", ["DiT-T/4", "ViT-T/4"])
def test_input_shape_must_match_the_model(name):
    with pytest.raises(ValueError, match="input_size 18 is not divisible by the patch size 4"):
        create_model(name, input_size=18)
    m = create_model(name, input_size=16, in_channels=1, num_classes=10)
    t, y = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 16, 16\], got \[2, 1, 32, 32\]"):
        m(torch.zeros(2, 1, 32, 32), t, y)
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 16, 16\], got \[2, 3, 16, 16\]"):
        m(torch.zeros(2, 3, 16, 16), t, y)


def test_vit_rejects_float_timesteps():
    m = create_model("ViT-T/4", input_size=16, in_channels=1, num_classes=10)
    with pytest.raises(TypeError, match="integer timesteps"):
        m(torch.zeros(2, 1, 16, 16), torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_loading_the_wrong_checkpoint_names_keys_and_the_likely_cause():
    vit = create_model("ViT-T/4", input_size=16, in_channels=4, num_classes=10)
    dit_sd = create_model("DiT-T/2", input_size=32, in_channels=4, num_classes=10).state_dict()
    with pytest.raises(ValueError) as err:
        load_weights(vit, dit_sd, "ViT-T/4")
    msg = str(err.value)
    assert msg.startswith("checkpoint does not fit ViT-T/4: missing ['t_embedder.weight', 'y_embedder.weight'")
    assert (
        "This looks like a DiT-T/2 checkpoint (input 32, 4 channels, 10 classes, learn_sigma), but --model is ViT-T/4"
        in msg
    )
    assert "\n" not in msg

    official = random_official_vit_state_dict(depth=6, dim=128, patch=4, in_ch=4, out_ch=4, grid=4, rows=11)
    with pytest.raises(ValueError, match="official Min-SNR ViT checkpoint .convert it with models.convert_minsnr_vit"):
        load_weights(vit, official, "ViT-T/4")

    bigger = create_model("ViT-T/4", input_size=32, in_channels=4, num_classes=10).state_dict()
    with pytest.raises(ValueError, match=r"shape \(ckpt vs model\) \['pos_embed \(1, 66, 128\) vs \(1, 18, 128\)'\]"):
        load_weights(vit, bigger, "ViT-T/4")


def test_a_learn_sigma_mismatch_is_named_in_the_message():
    plain = create_model("DiT-T/4", input_size=8, in_channels=4, num_classes=3, learn_sigma=False)
    learned = create_model("DiT-T/4", input_size=8, in_channels=4, num_classes=3).state_dict()
    with pytest.raises(ValueError) as err:
        load_weights(plain, learned, "DiT-T/4")
    assert (
        "a DiT-T/4 checkpoint (input 8, 4 channels, 3 classes, learn_sigma), but --model is DiT-T/4 (a DiT-T/4 "
        "checkpoint (input 8, 4 channels, 3 classes))" in str(err.value)
    )


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"weighting": "edm", "sigma_data": 0.0}, "sigma_data must be > 0"),
        ({"timestep_sampling": "logit_normal", "logit_normal": (0.0, -1.0)}, "logit-normal scale s must be > 0"),
        ({"timestep_sampling": "laplace", "laplace": (0.0, 0.0)}, "Laplace scale must be > 0"),
        ({"weighting": "sigmoid", "sigmoid_bias": float("nan")}, "sigmoid_bias must be a finite number"),
    ],
)
def test_density_and_weighting_parameters_out_of_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_diffusion(**kwargs)


def test_the_uniform_objective_refuses_a_density_with_an_empty_step():
    """Laplace(0, 0.05) on the cosine schedule: the far tails round to zero mass, and 1/(T·p) would be infinite."""
    with pytest.raises(ValueError, match=r"no mass on step \d+, so the uniform objective would divide by zero"):
        create_diffusion(
            noise_schedule="cosine", timestep_sampling="laplace", laplace=(0.0, 0.05), timestep_objective="uniform"
        )
    create_diffusion(noise_schedule="cosine", timestep_sampling="laplace", laplace=(0.0, 0.05))  # resampled is fine


def test_any_sigmoid_bias_is_allowed():
    for b in (-10.0, 0.0, 3.5):
        create_diffusion(weighting="sigmoid", sigmoid_bias=b, prediction="x0")
