"""Turn any supported checkpoint into a ready model plus the settings sampling needs.

Three kinds are recognised:
- ours (written by train.py): model, diffusion and data settings come from the checkpoint itself;
- a released DiT state dict (facebookresearch/DiT, or a dict with "ema"/"model" keys): ``--model`` names it;
  DiT's settings (ε-prediction, linear schedule, learned σ, SD VAE) are the defaults;
- the official Min-SNR ViT release (TiankaiHang/Min-SNR-Diffusion-Training): converted by
  ``models.convert_minsnr_vit``; x0-prediction, cosine schedule, SD VAE ft-mse.
"""

from dataclasses import dataclass, field

import torch

from data.normalization import Normalization
from data.vae import SCALE_FACTOR, VAES
from models import checkpoint_config, convert_minsnr_vit, create_model, is_minsnr_vit, load_weights, strip_wrappers
from training.checkpoint import load_checkpoint


@dataclass
class SamplingSpec:
    """Everything besides the weights: the model, the diffusion it was trained with, and how to decode."""

    model: str
    model_kwargs: dict
    prediction: str
    noise_schedule: str
    diffusion_steps: int
    num_classes: int
    null_class: int | None  # the class index of the unconditional row, None when the model has none
    decoder: str | None  # a VAE id or directory; None = pixel space
    scale_factor: float
    source: str  # "ours", "dit-release" or "minsnr-release", for the log
    notes: list[str] = field(default_factory=list)
    normalization: Normalization | None = None  # the per-channel statistics the model was trained on

    def from_data(self, z: torch.Tensor) -> torch.Tensor:
        """Data units (pixels in [−1, 1], or unscaled latents) -> the model's space: the inverse of ``to_data``."""
        if self.normalization is not None:
            return self.normalization.apply(z)
        return z * self.scale_factor

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """A sample in the model's space -> the data's units: pixels in [−1, 1], or latents for the decoder.
        Inverts the training normalisation, or else divides by the latent scale factor (1 in pixel space)."""
        if self.normalization is not None:
            return self.normalization.invert(x)
        return x / self.scale_factor


def _ours(state: dict, weights: str) -> tuple[dict, SamplingSpec]:
    args, data = state["args"], state.get("data", {})
    if "shape" not in data:
        raise ValueError("this checkpoint predates data records (shape, decoder); retrain or resave it")
    channels, size, _ = data["shape"]
    num_classes = data["num_classes"]
    kwargs = {"input_size": size, "in_channels": channels, "num_classes": num_classes,
              "learn_sigma": args["learn_sigma"], "class_dropout_prob": args["class_dropout"],
              "qk_norm": args.get("qk_norm", False)}  # fmt: skip
    null = num_classes if args["class_dropout"] > 0 or args["model"].startswith("ViT") else None
    spec = SamplingSpec(args["model"], kwargs, args["prediction"], args["noise_schedule"], args["diffusion_steps"],
                        num_classes, null, data["decoder"], data["scale_factor"], "ours")  # fmt: skip
    if data.get("normalization") is not None:
        spec.normalization = Normalization.from_record(data["normalization"], channels, "checkpoint data record")
    init_share = args["ema_decay"] ** state["step"]
    if weights == "ema" and init_share > 0.5:
        spec.notes.append(
            f"the EMA after {state['step']} steps at decay {args['ema_decay']} still holds "
            f"{init_share:.0%} of the initial weights; --weights raw samples the trained ones"
        )
    return state["ema" if weights == "ema" else "model"], spec


def _release(sd: dict, model: str | None, source: str) -> tuple[dict, SamplingSpec]:
    if source == "minsnr-release":
        sd, name, _ = convert_minsnr_vit(sd)
        if model is not None and model != name:
            raise ValueError(f"this is an official Min-SNR {name} checkpoint, but --model is {model}")
        model, prediction, schedule = name, "x0", "cosine"
    else:
        if model is None:
            raise ValueError("a checkpoint without our training record needs --model (e.g. --model DiT-XL/2)")
        prediction, schedule = "eps", "linear"
    config = checkpoint_config(sd)
    kwargs = {k: config[k] for k in ("input_size", "in_channels", "num_classes", "learn_sigma", "qk_norm")}
    spec = SamplingSpec(model, kwargs, prediction, schedule, 1000, config["num_classes"], config["num_classes"],
                        VAES["mse"], SCALE_FACTOR, source)  # fmt: skip
    return sd, spec


def load_for_sampling(
    path: str, model: str | None = None, weights: str = "ema", device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, SamplingSpec]:
    """Build the model of checkpoint ``path`` in eval mode on ``device`` with its ``weights`` ("ema" or "raw").
    Raises ValueError (one line) for a missing, unsafe or mismatched file."""
    state = load_checkpoint(path)
    if isinstance(state, dict) and "args" in state and "ema" in state:
        sd, spec = _ours(state, weights)
        if model is not None and model != spec.model:
            raise ValueError(f"{path} is a checkpoint of {spec.model}, but --model is {model}")
    else:
        if weights == "raw" and not ("model" in state and "ema" in state):
            raise ValueError(f"{path} holds one set of weights (a release); --weights raw needs our checkpoints")
        sd = state.get("ema" if weights == "ema" else "model", state) if isinstance(state, dict) else state
        sd = strip_wrappers(sd)
        sd, spec = _release(sd, model, "minsnr-release" if is_minsnr_vit(sd) else "dit-release")
    net = create_model(spec.model, **spec.model_kwargs)
    load_weights(net, sd, spec.model)
    return net.to(device).eval().requires_grad_(False), spec
