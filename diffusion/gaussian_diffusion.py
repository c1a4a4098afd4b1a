"""Discrete-time Gaussian (VP) diffusion: the schedule, the forward process, the parameterisations and the posterior.

x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε,  v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0,  SNR_t = ᾱ_t/(1 − ᾱ_t),  t ∈ {0, …, T−1}.
Training always uses all T steps; ``timesteps`` (from the respacing) is the subset that samplers visit. What is
trained (target weighting, timestep density, learned uncertainty) is the ``Loss`` of diffusion/loss.py;
``create_diffusion`` builds both and keeps ``training_losses`` and ``sample_timesteps`` here as the Loss's.
"""

from typing import TYPE_CHECKING

import numpy as np
import torch

from .params import check_name
from .schedules import betas_for_schedule, space_timesteps
from .timesteps import DENSITY_PARAMS
from .weighting import PREDICTIONS, WEIGHTING_PARAMS

if TYPE_CHECKING:
    from .loss import Loss


def _at(values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on ``like``'s device, shaped [B, 1, ..., 1] to broadcast against ``like``."""
    out = torch.as_tensor(values, device=t.device)[t].to(like.device, torch.float32)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


class GaussianDiffusion:
    """Schedule tables (float64 numpy, length T), the maps between x_t, x0, ε and v, and the posterior."""

    def __init__(
        self, betas: np.ndarray, prediction: str = "eps", learn_sigma: bool = True, timesteps: list[int] | None = None
    ):
        """``prediction`` (what the model outputs: eps, x0 or v) and ``learn_sigma`` (whether it also outputs ADM's
        variance values) say how to read the model; the loss is set apart, as ``self.loss``."""
        check_name("prediction", prediction, PREDICTIONS)
        self.prediction, self.learn_sigma = prediction, learn_sigma
        self.loss: Loss | None = None  # what training_losses and sample_timesteps use; create_diffusion sets it
        self.betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = T = len(self.betas)
        self.timesteps = np.array(timesteps if timesteps is not None else range(T), dtype=np.int64)

        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_betas = np.log(self.betas)
        self.snr = self.alphas_cumprod / (1.0 - self.alphas_cumprod)
        self.sigmas = np.sqrt(1.0 / self.alphas_cumprod - 1.0)  # EDM noise level of each step: σ_t = 1/√SNR_t

        # q(x_{t-1} | x_t, x0) = N(coef1·x0 + coef2·x_t, posterior_variance)
        acp, acp_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = self.betas * (1.0 - acp_prev) / (1.0 - acp)
        # Clipped: the variance at t = 0 is 0, so its log takes the value at t = 1 (as in ADM).
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = self.betas * np.sqrt(acp_prev) / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - acp_prev) * np.sqrt(1.0 - self.betas) / (1.0 - acp)

    # ---- forward process and parameterisations -------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε."""
        return _at(self.sqrt_alphas_cumprod, t, x0) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the model is trained to output: ε, x0 or v = √ᾱ·ε − √(1 − ᾱ)·x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return _at(self.sqrt_alphas_cumprod, t, x0) * noise - _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def to_x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, ε̂) from the model's prediction ``out`` of its target at (x_t, t)."""
        if self.prediction == "x0":
            return out, self.eps_from_x0(out, x_t, t)
        a, s = _at(self.sqrt_alphas_cumprod, t, x_t), _at(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        if self.prediction == "eps":
            return (x_t - s * out) / a, out
        return a * x_t - s * out, s * x_t + a * out  # v

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ε = (x_t − √ᾱ_t·x0)/√(1 − ᾱ_t)."""
        return (x_t - _at(self.sqrt_alphas_cumprod, t, x_t) * x0) / _at(self.sqrt_one_minus_alphas_cumprod, t, x_t)

    def split_output(self, out: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model output -> (prediction, variance values in [-1, 1] or None); checks the channel count."""
        channels = x_t.shape[1] * (2 if self.learn_sigma else 1)
        if out.shape[1] != channels:
            raise ValueError(
                f"model returned {out.shape[1]} channels for {x_t.shape[1]}-channel input; expected {channels} "
                f"(learn_sigma={self.learn_sigma})"
            )
        if out.shape[0] != x_t.shape[0] or out.shape[2:] != x_t.shape[2:]:
            raise ValueError(f"model output shape {tuple(out.shape)} does not match input {tuple(x_t.shape)}")
        if self.learn_sigma:
            pred, var_values = out.chunk(2, dim=1)
            return pred, var_values
        return out, None

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        mean = _at(self.posterior_mean_coef1, t, x_t) * x0 + _at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _at(self.posterior_variance, t, x_t), _at(self.posterior_log_variance_clipped, t, x_t)

    def learned_log_variance(self, var_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """ADM's learned range: log σ² = f·log β_t + (1 − f)·log β̃_t with f = (v + 1)/2."""
        frac = (var_values + 1) / 2
        max_log = _at(self.log_betas, t, var_values)
        min_log = _at(self.posterior_log_variance_clipped, t, var_values)
        return frac * max_log + (1 - frac) * min_log

    def predict(
        self, model, x_t: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None, clip_denoised: bool = False
    ):
        """One model evaluation -> (x̂0, ε̂, variance values or None). With ``clip_denoised``, x̂0 is clamped to
        [-1, 1] and ε̂ recomputed from it."""
        pred, var_values = self.split_output(model(x_t, t, **(model_kwargs or {})), x_t)
        x0, eps = self.to_x0_eps(pred.float(), x_t, t)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = self.eps_from_x0(x0, x_t, t)
        return x0, eps, None if var_values is None else var_values.float()

    # ---- training: delegated to the Loss (diffusion/loss.py) -----------------------------------------------

    def sample_timesteps(self, n: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        """t for a training batch, from the loss's timestep density (:meth:`diffusion.loss.Loss.sample_timesteps`)."""
        return self._loss().sample_timesteps(n, device, generator)

    def training_losses(
        self, model, x_start: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None, noise=None
    ) -> dict[str, torch.Tensor]:
        """Per-sample loss terms, each of shape [B] (:meth:`diffusion.loss.Loss.__call__`)."""
        return self._loss()(model, x_start, t, model_kwargs, noise)

    def _loss(self) -> "Loss":
        if self.loss is None:
            raise RuntimeError(
                "this diffusion has no loss; build it with create_diffusion(...), or set "
                "diffusion.loss = Loss(LossConfig(...), diffusion) (diffusion/loss.py)"
            )
        return self.loss


def create_diffusion(
    timestep_respacing: str | int = "",
    noise_schedule: str = "linear",
    prediction: str = "eps",
    weighting: str = "snr",
    snr_gamma: float = 5.0,
    learn_sigma: bool = True,
    diffusion_steps: int = 1000,
    timestep_sampling: str = "uniform",
    logit_normal: tuple[float, float] = (0.0, 1.0),
    laplace: tuple[float, float] = (0.0, 0.5),
    timestep_objective: str = "resampled",
    sigma_data: float = 0.5,
    sigmoid_bias: float = -3.0,
    **params,
) -> GaussianDiffusion:
    """Build a diffusion and its loss. The defaults are DiT's (linear schedule, ε-prediction, plain ε-MSE = ``snr``
    weighting, learned variance); the paper's recipe is ``noise_schedule="cosine", weighting="min_snr"``.

    ``timestep_respacing`` picks the steps samplers visit (``""`` all, ``"250"``, ``"ddim50"``); training
    always draws t from all ``diffusion_steps``. The loss keywords make a ``LossConfig`` (diffusion/loss.py):
    a weighting's or density's parameter is a keyword of its own name, also one added to the tables after this
    signature was written (``params``). The result's ``loss`` is the ``Loss``; ``training_losses`` and
    ``sample_timesteps`` are its.
    """
    from .loss import Loss, LossConfig  # loss.py builds on this module

    if unknown := sorted(set(params) - set(WEIGHTING_PARAMS) - set(DENSITY_PARAMS)):
        raise TypeError(f"create_diffusion() got an unexpected keyword argument {unknown[0]!r}")
    betas = betas_for_schedule(noise_schedule, diffusion_steps)
    diffusion = GaussianDiffusion(
        betas,
        prediction=prediction,
        learn_sigma=learn_sigma,
        timesteps=space_timesteps(diffusion_steps, timestep_respacing),
    )
    flags = dict(
        prediction=prediction,
        weighting=weighting,
        snr_gamma=snr_gamma,
        sigma_data=sigma_data,
        sigmoid_bias=sigmoid_bias,
        timestep_sampling=timestep_sampling,
        logit_normal=logit_normal,
        laplace=laplace,
        timestep_objective=timestep_objective,
        **params,
    )
    diffusion.loss = Loss(LossConfig.from_flags(flags), diffusion)
    return diffusion
