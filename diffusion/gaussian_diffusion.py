"""Discrete-time Gaussian (VP) diffusion: forward process, parameterisations and the training loss.

x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε,  v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0,  SNR_t = ᾱ_t/(1 − ᾱ_t),  t ∈ {0, …, T−1}.
Training always uses all T steps; ``timesteps`` (from the respacing) is the subset that samplers visit.
"""

import math

import numpy as np
import torch

from .schedules import betas_for_schedule, space_timesteps
from .timesteps import objective_factor, timestep_probabilities
from .weighting import loss_weight, warn_if_diverging


def _at(values: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float32 on ``like``'s device, shaped [B, 1, ..., 1] to broadcast against ``like``."""
    out = torch.as_tensor(values, device=t.device)[t].to(like.device, torch.float32)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch: [B, ...] -> [B]."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) for data x ∈ [-1, 1] quantised to 256 levels (bin width 2/255) under N(mean, e^(2·log_scale)).

    The end bins extend to ±∞, as in Ho et al. 2020 and ADM. Φ is the exact normal CDF; ADM uses a tanh
    approximation, so this term (the t = 0 part of ``vb`` only) differs from ADM's by up to a few percent.
    """
    inv_std = torch.exp(-log_scale)
    upper, lower = inv_std * (x - mean + 1.0 / 255), inv_std * (x - mean - 1.0 / 255)
    cdf_plus, cdf_minus = torch.special.ndtr(upper), torch.special.ndtr(lower)
    top_bin = torch.special.ndtr(-lower)  # 1 − Φ(lower), without cancellation
    mass = torch.where(x < -0.999, cdf_plus, torch.where(x > 0.999, top_bin, cdf_plus - cdf_minus))
    return torch.log(mass.clamp(min=1e-12))


class GaussianDiffusion:
    """Schedule tables (float64 numpy, length T) plus the maps between x_t, x0, ε and v."""

    def __init__(
        self,
        betas: np.ndarray,
        prediction: str = "eps",
        weighting: str = "snr",
        snr_gamma: float = 5.0,
        learn_sigma: bool = True,
        timesteps: list[int] | None = None,
        timestep_sampling: str = "uniform",
        logit_normal: tuple[float, float] = (0.0, 1.0),
        laplace: tuple[float, float] = (0.0, 0.5),
        timestep_objective: str = "resampled",
        sigma_data: float = 0.5,
        sigmoid_bias: float = -3.0,
    ):
        self.prediction, self.weighting, self.snr_gamma = prediction, weighting, float(snr_gamma)
        self.learn_sigma = learn_sigma
        self.timestep_sampling = timestep_sampling
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
        # Validates the names and parameters. p_t is the training density; the weights already include its
        # objective factor (diffusion/timesteps.py).
        self.timestep_probs = timestep_probabilities(timestep_sampling, self.snr, logit_normal, laplace)
        self.loss_weights = loss_weight(weighting, self.snr, prediction, snr_gamma, sigma_data, sigmoid_bias)
        self.loss_weights = self.loss_weights * objective_factor(self.timestep_probs, timestep_objective)
        warn_if_diverging(prediction, weighting)

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

    # ---- training ------------------------------------------------------------------------------------------

    def sample_timesteps(self, n: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        """t for a training batch: uniform on {0..T-1}, or drawn from the density's p_t
        (:func:`diffusion.timesteps.timestep_probabilities`)."""
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.num_timesteps, (n,), device=device, generator=generator)
        p = torch.as_tensor(self.timestep_probs, device=device)
        return torch.multinomial(p, n, replacement=True, generator=generator)

    def training_losses(
        self, model, x_start: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None, noise=None
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses, each of shape [B].

        ``loss`` = ``weighted_mse`` (+ ``vb`` when learn_sigma), where weighted_mse = w_t·mean‖target − pred‖²
        with w_t from :func:`diffusion.weighting.loss_weight`, ``mse`` is the unweighted MSE of the target,
        ``x0_mse`` = mean‖x0 − x̂0‖² of the x0 the prediction implies (comparable across targets and
        weightings; not differentiated), and ``vb`` is
        ADM's variational-bound term in bits/dim, computed on a stop-gradient mean so that it trains only
        the variance (the decoder NLL at t = 0, KL(q ‖ p) otherwise).
        """
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = self.q_sample(x_start, t, noise)
        pred, var_values = self.split_output(model(x_t, t, **(model_kwargs or {})), x_t)
        mse = mean_flat((self.target(x_start, t, noise) - pred.float()) ** 2)
        weighted = _at(self.loss_weights, t, mse) * mse
        with torch.no_grad():
            x0_hat, _ = self.to_x0_eps(pred.detach().float(), x_t, t)
            x0_mse = mean_flat((x_start.float() - x0_hat) ** 2)
        terms = {"mse": mse, "x0_mse": x0_mse, "weighted_mse": weighted, "loss": weighted}
        if var_values is not None:
            terms["vb"] = self.vb_term(pred.detach().float(), var_values.float(), x_start, x_t, t)
            terms["loss"] = weighted + terms["vb"]
        return terms

    def vb_term(self, pred, var_values, x_start, x_t, t) -> torch.Tensor:
        """ADM's L_vlb term for one t, in bits/dim: KL(q(x_{t-1}|x_t,x0) ‖ p(x_{t-1}|x_t)) for t > 0 and
        −log p(x0|x1) (discretised Gaussian) for t = 0."""
        true_mean, _, true_log_var = self.q_posterior(x_start, x_t, t)
        x0_hat, _ = self.to_x0_eps(pred, x_t, t)
        model_mean, _, _ = self.q_posterior(x0_hat, x_t, t)
        model_log_var = self.learned_log_variance(var_values, t)
        kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)


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
) -> GaussianDiffusion:
    """Build a diffusion. The defaults are DiT's (linear schedule, ε-prediction, plain ε-MSE = ``snr``
    weighting, learned variance); the paper's recipe is ``noise_schedule="cosine", weighting="min_snr"``.

    ``timestep_respacing`` picks the steps samplers visit (``""`` all, ``"250"``, ``"ddim50"``); training
    always draws t from all ``diffusion_steps``.
    """
    betas = betas_for_schedule(noise_schedule, diffusion_steps)
    return GaussianDiffusion(
        betas,
        prediction=prediction,
        weighting=weighting,
        snr_gamma=snr_gamma,
        learn_sigma=learn_sigma,
        timesteps=space_timesteps(diffusion_steps, timestep_respacing),
        timestep_sampling=timestep_sampling,
        logit_normal=logit_normal,
        laplace=laplace,
        timestep_objective=timestep_objective,
        sigma_data=sigma_data,
        sigmoid_bias=sigmoid_bias,
    )
