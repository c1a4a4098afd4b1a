"""Turn any supported checkpoint into a ready model plus the settings sampling needs.

Three kinds are recognised:
- ours (written by train.py, any format version; training/checkpoint.py): the model is rebuilt from the
  checkpoint's ``arch``, and the diffusion settings and the data transform come from it too;
- a released DiT state dict (facebookresearch/DiT, or a dict with "ema"/"model" keys): ``--model`` names it;
  DiT's settings (ε-prediction, linear schedule, learned σ, SD VAE) are the defaults;
- the official Min-SNR ViT release (TiankaiHang/Min-SNR-Diffusion-Training): converted by
  ``models.convert_minsnr_vit``; x0-prediction, cosine schedule, SD VAE ft-mse.
"""

from dataclasses import dataclass, field

import torch

from data.transform import DataTransform, Scale, read_transform
from data.vae import SCALE_FACTOR, VAES
from models import checkpoint_config, convert_minsnr_vit, create_model, is_minsnr_vit, load_weights, strip_wrappers
from training.checkpoint import is_training_checkpoint, load_checkpoint, read


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
    transform: DataTransform  # data units (pixels in [−1, 1], or unscaled latents) -> the model's space
    source: str  # "ours", "dit-release" or "minsnr-release", for the log
    notes: list[str] = field(default_factory=list)

    def from_data(self, z: torch.Tensor) -> torch.Tensor:
        """Data units -> the model's space, as in training."""
        return self.transform.apply(z)

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """A sample in the model's space -> the data's units: pixels in [−1, 1], or latents for the decoder."""
        return self.transform.invert(x)


def _ours(ckpt: dict, path: str, weights: str) -> tuple[dict, dict, dict]:
    """Weights, arch and the other spec fields of a checkpoint in the layout of ``training.checkpoint.read``."""
    arch, diffusion = ckpt["arch"], ckpt["diffusion"]
    transform = read_transform(ckpt["data_transform"], arch["kwargs"]["in_channels"], f"{path} data_transform")
    fields = {
        "prediction": diffusion["prediction"],
        "noise_schedule": diffusion["noise_schedule"],
        "diffusion_steps": diffusion["diffusion_steps"],
        "decoder": ckpt["data"]["decoder"],
        "transform": transform,
        "source": "ours",
        "notes": [],
    }
    init_share = ckpt["ema_decay"] ** ckpt["step"]
    if weights == "ema" and init_share > 0.5:
        fields["notes"].append(
            f"the EMA after {ckpt['step']} steps at decay {ckpt['ema_decay']} still holds "
            f"{init_share:.0%} of the initial weights; --weights raw samples the trained ones"
        )
    return ckpt["ema" if weights == "ema" else "model"], arch, fields


def _release(sd: dict, model: str | None, source: str) -> tuple[dict, dict, dict]:
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
    fields = {
        "prediction": prediction,
        "noise_schedule": schedule,
        "diffusion_steps": 1000,
        "decoder": VAES["mse"],
        "transform": Scale(SCALE_FACTOR),
        "source": source,
    }
    return sd, {"name": model, "kwargs": kwargs}, fields


def load_for_sampling(
    path: str, model: str | None = None, weights: str = "ema", device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, SamplingSpec]:
    """Build the model of checkpoint ``path`` in eval mode on ``device`` with its ``weights`` ("ema" or "raw").
    Raises ValueError (one line) for a missing, unsafe or mismatched file."""
    state = load_checkpoint(path)
    if is_training_checkpoint(state):
        sd, arch, fields = _ours(read(state, path), path, weights)
        if model is not None and model != arch["name"]:
            raise ValueError(f"{path} is a checkpoint of {arch['name']}, but --model is {model}")
    else:
        if weights == "raw" and not ("model" in state and "ema" in state):
            raise ValueError(f"{path} holds one set of weights (a release); --weights raw needs our checkpoints")
        sd = state.get("ema" if weights == "ema" else "model", state) if isinstance(state, dict) else state
        sd = strip_wrappers(sd)
        sd, arch, fields = _release(sd, model, "minsnr-release" if is_minsnr_vit(sd) else "dit-release")
    net = create_model(arch["name"], **arch["kwargs"])
    load_weights(net, sd, arch["name"])
    spec = SamplingSpec(
        arch["name"], arch["kwargs"], num_classes=arch["kwargs"]["num_classes"], null_class=net.null_class, **fields
    )
    return net.to(device).eval().requires_grad_(False), spec
