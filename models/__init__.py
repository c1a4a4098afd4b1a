"""Backbones. ``DiT_models`` and ``ViT_models`` map CLI names ("DiT-XL/2", "ViT-B/2", tiny "DiT-T/4") to
constructors taking ``input_size``, ``in_channels``, ``num_classes`` and ``learn_sigma``; ``model(x, t, y)``
returns [B, C_out, H, W]."""

from torch import nn

from .convert import convert_minsnr_vit, count_blocks, is_minsnr_vit, strip_wrappers
from .dit import DIT_SIZES, DiT, DiT_models
from .flops import forward_macs
from .vit import VIT_SIZES, ViT, ViT_models

ALL_MODELS = {**DiT_models, **ViT_models}

__all__ = [
    "ALL_MODELS",
    "DIT_SIZES",
    "DiT",
    "DiT_models",
    "VIT_SIZES",
    "ViT",
    "ViT_models",
    "convert_minsnr_vit",
    "check_model_name",
    "create_model",
    "describe_checkpoint",
    "forward_macs",
    "is_minsnr_vit",
    "load_weights",
]


def check_model_name(name: str) -> None:
    """Raise a ValueError that lists the valid names when ``name`` is not registered."""
    if name not in ALL_MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(ALL_MODELS)}")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name (see :func:`check_model_name` for unknown names)."""
    check_model_name(name)
    return ALL_MODELS[name](**kwargs)


def describe_checkpoint(state_dict: dict) -> str:
    """A short guess of what a state dict holds, e.g. "a DiT-XL/2 checkpoint (input 32, 4 channels, 1000 classes)"."""
    sd = strip_wrappers(state_dict)
    if is_minsnr_vit(sd):
        return "an official Min-SNR ViT checkpoint (convert it with models.convert_minsnr_vit)"
    if "x_embedder.proj.weight" not in sd:
        return "not a DiT or ViT checkpoint (no x_embedder.proj.weight)"
    hidden, channels, patch, _ = sd["x_embedder.proj.weight"].shape
    depth = count_blocks(sd)
    family, sizes, classes, extra = (
        ("DiT", DIT_SIZES, "y_embedder.embedding_table.weight", 0)
        if "t_embedder.mlp.0.weight" in sd
        else ("ViT", VIT_SIZES, "y_embedder.weight", 2)
    )
    size = next((s for s, dims in sizes.items() if dims[:2] == (depth, hidden)), f"(depth {depth}, hidden {hidden})")
    grid = int(round((sd["pos_embed"].shape[1] - extra) ** 0.5)) if "pos_embed" in sd else 0
    num_classes = sd[classes].shape[0] - 1 if classes in sd else "?"
    return f"a {family}-{size}/{patch} checkpoint (input {grid * patch}, {channels} channels, {num_classes} classes)"


def load_weights(model: nn.Module, state_dict: dict, model_name: str) -> None:
    """Strictly load ``state_dict`` into ``model`` (DDP / compile prefixes are stripped first).

    On any missing, unexpected or mis-shaped key it raises one ValueError naming the first few keys and what the
    checkpoint looks like, e.g. "this looks like a DiT-XL/2 checkpoint …, but --model is ViT-B/2 …".
    """
    sd = strip_wrappers(state_dict)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        problems = [
            f"{label} {items[:3]}{' …' if len(items) > 3 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape (ckpt vs model)", shapes))
            if items
        ]
        raise ValueError(
            f"checkpoint does not fit {model_name}: {'; '.join(problems)}. This looks like "
            f"{describe_checkpoint(sd)}, but --model is {model_name} ({describe_checkpoint(own)})"
        )
    model.load_state_dict(sd, strict=True)
