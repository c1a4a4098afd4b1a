"""Gaussian diffusion with selectable prediction targets, loss weightings (Min-SNR-γ and others), and samplers over
level lists."""

from .gaussian_diffusion import GaussianDiffusion, create_diffusion
from .guidance import classifier_free_guidance, timestep_interval_sigmas
from .levels import edm_timesteps, respaced_timesteps
from .loss import Loss, LossConfig
from .samplers import SAMPLERS, Sampler, get_sampler, sample_ddim, sample_ddpm, sample_dpmpp_2m, sample_heun
from .schedules import SCHEDULES, betas_for_schedule, space_timesteps
from .switch import switch_at_sigma
from .weighting import PREDICTIONS, WEIGHTINGS, loss_weight

__all__ = [
    "GaussianDiffusion",
    "create_diffusion",
    "Loss",
    "LossConfig",
    "classifier_free_guidance",
    "timestep_interval_sigmas",
    "edm_timesteps",
    "respaced_timesteps",
    "SAMPLERS",
    "Sampler",
    "get_sampler",
    "sample_ddpm",
    "sample_ddim",
    "sample_heun",
    "sample_dpmpp_2m",
    "SCHEDULES",
    "betas_for_schedule",
    "space_timesteps",
    "switch_at_sigma",
    "PREDICTIONS",
    "WEIGHTINGS",
    "loss_weight",
]
