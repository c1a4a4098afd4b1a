"""The training loss: one frozen ``LossConfig`` says what is trained, and the ``Loss`` built from it over a
``GaussianDiffusion`` computes it.

    config = LossConfig(prediction="x0", weighting="min_snr", weighting_params={"snr_gamma": 5.0})
    loss = Loss(config, diffusion)  # or Loss.from_args(args) from train.py's flags
    t = loss.sample_timesteps(len(x0), generator=g)
    terms = loss(model, x0, t, {"y": y})  # per sample: loss, weighted_mse, mse, x0_mse; vb, u when on
    terms["loss"].mean().backward()

The config holds the target, the weighting with its parameters (diffusion/weighting.py), the timestep density with
its parameters and the objective (diffusion/timesteps.py), and EDM2's learned uncertainty (diffusion/uncertainty.py).
The diffusion holds the schedule, the maps between x_t, x0, ε and v, and the posterior. ``create_diffusion`` builds
both and keeps ``diffusion.training_losses`` and ``diffusion.sample_timesteps`` as the Loss's.
"""

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from .gaussian_diffusion import GaussianDiffusion, _at
from .params import check_name
from .schedules import betas_for_schedule
from .timesteps import DENSITIES, DENSITY_PARAMS, OBJECTIVES, density_params, objective_factor, timestep_probabilities
from .uncertainty import LogVariance, uncertainty_loss
from .weighting import PREDICTIONS, WEIGHTING_PARAMS, WEIGHTINGS, loss_weight, warn_if_diverging, weighting_params


@dataclass(frozen=True)
class LossConfig:
    """What is trained. ``weighting_params`` and ``density_params`` may be given as mappings; they are kept as
    ((name, value), ...) pairs, holding every parameter the chosen weighting or density declares (the table's
    default where none is given). A parameter that the choice does not take is an error."""

    prediction: str = "eps"  # the target: eps, x0 or v
    weighting: str = "snr"
    weighting_params: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    timestep_sampling: str = "uniform"  # the training density of t
    density_params: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    timestep_objective: str = "resampled"  # resampled | uniform (diffusion/timesteps.py)
    learned_uncertainty: bool = False  # EDM2's u(λ): loss = w·MSE/e^u + u
    uncertainty_seed: int = 0  # seeds u's fixed Fourier features

    def __post_init__(self):
        check_name("prediction", self.prediction, PREDICTIONS)
        check_name("weighting", self.weighting, WEIGHTINGS)
        check_name("timestep sampling", self.timestep_sampling, DENSITIES)
        check_name("timestep objective", self.timestep_objective, OBJECTIVES)
        weighting = weighting_params(self.weighting, dict(self.weighting_params), strict=True)
        density = density_params(self.timestep_sampling, dict(self.density_params), strict=True)
        object.__setattr__(self, "weighting_params", tuple(weighting.items()))
        object.__setattr__(self, "density_params", tuple(density.items()))

    @classmethod
    def flags(cls) -> tuple[str, ...]:
        """The flat names of every field, in field order: a field of parameters stands for every parameter its
        table declares (diffusion/params.py), and ``uncertainty_seed`` is the run's ``seed``. They are train.py's
        flags (all but ``seed`` and ``learned_uncertainty`` are also ``create_diffusion``'s keywords); checkpoints
        and run directories take their list from here."""
        names: list[str] = []
        for f in fields(cls):
            names += list(PARAM_TABLES[f.name]) if f.name in PARAM_TABLES else [FLAG_OF.get(f.name, f.name)]
        return tuple(names)

    @classmethod
    def from_flags(cls, flags: Mapping[str, Any]) -> "LossConfig":
        """From flat names (:meth:`flags`), as train.py's flags and ``create_diffusion``'s keywords spell them.
        ``prediction`` and ``weighting`` are needed; another field whose name is missing takes its default here
        (a version-1 checkpoint may predate its flag), and so does a missing parameter. Every parameter value
        present is checked, also one that the chosen weighting or density does not take (and which is then left
        out); other keys are ignored."""
        weighting, density = flags["weighting"], flags.get("timestep_sampling", cls.timestep_sampling)
        return cls(
            prediction=flags["prediction"],
            weighting=weighting,
            weighting_params=weighting_params(weighting, {k: flags[k] for k in WEIGHTING_PARAMS if k in flags}),
            timestep_sampling=density,
            density_params=density_params(density, {k: flags[k] for k in DENSITY_PARAMS if k in flags}),
            timestep_objective=flags.get("timestep_objective", cls.timestep_objective),
            learned_uncertainty=bool(flags.get("learned_uncertainty", cls.learned_uncertainty)),
            uncertainty_seed=int(flags.get("seed", cls.uncertainty_seed)),
        )

    @classmethod
    def from_args(cls, args) -> "LossConfig":
        """From train.py's parsed flags (training/config.py)."""
        return cls.from_flags(vars(args))

    def to_dict(self) -> dict[str, Any]:
        """Plain data, one key per field, each field of parameters as {name: value}: the checkpoint's ``loss``
        record (training/checkpoint.py). :meth:`from_dict` rebuilds the config from it."""
        return {f.name: self._plain(f.name) for f in fields(self)}

    def _plain(self, name: str):
        value = getattr(self, name)
        return dict(value) if name in PARAM_TABLES else value

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "LossConfig":
        """The config of a :meth:`to_dict` record, checked as any config is; a key that is no field is an error."""
        if unknown := sorted(set(record) - {f.name for f in fields(cls)}):
            raise ValueError(f"unknown loss settings {unknown}; valid: {', '.join(f.name for f in fields(cls))}")
        return cls(**record)


# The table of each field of parameters, and the flat name of a field named otherwise than its flag.
PARAM_TABLES = {"weighting_params": WEIGHTING_PARAMS, "density_params": DENSITY_PARAMS}
FLAG_OF = {"uncertainty_seed": "seed"}
LOSS_FLAGS = LossConfig.flags()  # prediction, weighting, snr_gamma, ..., learned_uncertainty, seed


class Loss:
    """The training loss of ``config`` over ``diffusion``: draws t and returns the per-sample terms."""

    def __init__(self, config: LossConfig, diffusion: GaussianDiffusion):
        if config.prediction != diffusion.prediction:
            raise ValueError(f"the loss's target {config.prediction!r} is not the diffusion's {diffusion.prediction!r}")
        self.config, self.diffusion = config, diffusion
        # p_t of the training density, and each step's weight on the MSE of the target, times the objective's
        # factor (diffusion/timesteps.py). Both validate against the schedule (a step without mass, say).
        self.timestep_probs = timestep_probabilities(
            config.timestep_sampling, diffusion.snr, **dict(config.density_params)
        )
        self.weights = loss_weight(config.weighting, diffusion.snr, config.prediction, **dict(config.weighting_params))
        self.weights = self.weights * objective_factor(self.timestep_probs, config.timestep_objective)
        warn_if_diverging(config.prediction, config.weighting)
        self.logvar: LogVariance | None = None
        if config.learned_uncertainty:
            with torch.random.fork_rng(devices=[]):  # its layer's initial draws (then zeroed) leave the caller's RNG
                self.logvar = LogVariance(seed=config.uncertainty_seed)
        self._log_snr: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_args(cls, args, device: torch.device | str | None = None) -> "Loss":
        """train.py's loss: ``LossConfig.from_args(args)`` over the diffusion of --noise-schedule, --diffusion-steps
        and --learn-sigma, with u(λ) on ``device``. The diffusion's ``loss`` is this one."""
        betas = betas_for_schedule(args.noise_schedule, args.diffusion_steps)
        diffusion = GaussianDiffusion(betas, args.prediction, args.learn_sigma)
        loss = cls(LossConfig.from_args(args), diffusion).to(device)
        diffusion.loss = loss
        return loss

    def to(self, device: torch.device | str | None) -> "Loss":
        """Move u(λ), if any, to ``device``."""
        if self.logvar is not None and device is not None:
            self.logvar.to(device)
        return self

    def parameters(self) -> Iterator[nn.Parameter]:
        """The loss's own trainable parameters: those of u(λ), or none."""
        return iter(()) if self.logvar is None else self.logvar.parameters()

    def sample_timesteps(self, n: int, device: torch.device | str = "cpu", generator=None) -> torch.Tensor:
        """t for a training batch: uniform on {0..T-1}, or drawn from the density's p_t
        (:func:`diffusion.timesteps.timestep_probabilities`)."""
        if self.config.timestep_sampling == "uniform":
            return torch.randint(0, self.diffusion.num_timesteps, (n,), device=device, generator=generator)
        p = torch.as_tensor(self.timestep_probs, device=device)
        return torch.multinomial(p, n, replacement=True, generator=generator)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """λ_t = log SNR_t, float32, on t's device."""
        if t.device not in self._log_snr:
            self._log_snr[t.device] = torch.as_tensor(self.diffusion.snr, device=t.device).log().float()
        return self._log_snr[t.device][t]

    def __call__(
        self,
        model,
        x_start: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise=None,
        uncertainty: nn.Module | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample losses, each of shape [B].

        ``loss`` = ``weighted_mse`` (+ ``vb`` when learn_sigma), where weighted_mse = w_t·mean‖target − pred‖²
        with w_t from :func:`diffusion.weighting.loss_weight`, ``mse`` is the unweighted MSE of the target,
        ``x0_mse`` = mean‖x0 − x̂0‖² of the x0 the prediction implies (comparable across targets and
        weightings; not differentiated), and ``vb`` is ADM's variational-bound term in bits/dim, computed on a
        stop-gradient mean so that it trains only the variance (the decoder NLL at t = 0, KL(q ‖ p) otherwise).

        With learned uncertainty, ``u`` = u(λ_t) (detached) and ``loss`` = weighted_mse/e^u + u (+ ``vb``),
        computed outside autocast. ``uncertainty`` evaluates u in place of ``self.logvar``: pass its
        DistributedDataParallel wrapper when training on several processes.
        """
        d = self.diffusion
        noise = torch.randn_like(x_start) if noise is None else noise
        x_t = d.q_sample(x_start, t, noise)
        pred, var_values = d.split_output(model(x_t, t, **(model_kwargs or {})), x_t)
        mse = mean_flat((d.target(x_start, t, noise) - pred.float()) ** 2)
        weighted = _at(self.weights, t, mse) * mse
        with torch.no_grad():
            x0_hat, _ = d.to_x0_eps(pred.detach().float(), x_t, t)
            x0_mse = mean_flat((x_start.float() - x0_hat) ** 2)
        terms = {"mse": mse, "x0_mse": x0_mse, "weighted_mse": weighted, "loss": weighted}
        if var_values is not None:
            terms["vb"] = vb_term(d, pred.detach().float(), var_values.float(), x_start, x_t, t)
            terms["loss"] = weighted + terms["vb"]
        if self.logvar is not None:
            with torch.autocast(t.device.type, enabled=False):
                u = (self.logvar if uncertainty is None else uncertainty)(self.log_snr(t))
                terms["u"] = u.detach()
                terms["loss"] = uncertainty_loss(weighted.float(), u) + terms.get("vb", 0)
        return terms


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


def vb_term(d: GaussianDiffusion, pred, var_values, x_start, x_t, t) -> torch.Tensor:
    """ADM's L_vlb term for one t, in bits/dim: KL(q(x_{t-1}|x_t,x0) ‖ p(x_{t-1}|x_t)) for t > 0 and
    −log p(x0|x1) (discretised Gaussian) for t = 0."""
    true_mean, _, true_log_var = d.q_posterior(x_start, x_t, t)
    x0_hat, _ = d.to_x0_eps(pred, x_t, t)
    model_mean, _, _ = d.q_posterior(x0_hat, x_t, t)
    model_log_var = d.learned_log_variance(var_values, t)
    kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
    nll = -mean_flat(discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var)) / math.log(2.0)
    return torch.where(t == 0, nll, kl)
