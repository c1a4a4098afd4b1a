"""Backbones. ``DiT_models`` and ``ViT_models`` map CLI names ("DiT-XL/2", "ViT-B/2", tiny "DiT-T/4") to
constructors taking ``input_size``, ``in_channels``, ``num_classes`` and ``learn_sigma``; ``model(x, t, y)``
returns [B, C_out, H, W], and ``model.null_class`` is the label of the unconditional row (None without one)."""

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
    "check_weights",
    "checkpoint_config",
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


def checkpoint_config(state_dict: dict) -> dict:
    """What a DiT or ViT state dict says of its model: family, size (e.g. "XL") and patch, plus the constructor
    arguments input_size, in_channels, num_classes, learn_sigma and qk_norm. The class table is assumed to end in
    the null row (true of every release and of our runs with label dropout). Raises ValueError for other dicts."""
    sd = strip_wrappers(state_dict)
    if "x_embedder.proj.weight" not in sd or "pos_embed" not in sd:
        raise ValueError("not a DiT or ViT state dict (no x_embedder.proj.weight / pos_embed)")
    hidden, channels, patch, _ = sd["x_embedder.proj.weight"].shape
    depth = count_blocks(sd)
    is_dit = "t_embedder.mlp.0.weight" in sd
    family, sizes, table, head, extra_tokens = (
        ("DiT", DIT_SIZES, "y_embedder.embedding_table.weight", "final_layer.linear.weight", 0)
        if is_dit
        else ("ViT", VIT_SIZES, "y_embedder.weight", "head.weight", 2)
    )
    size = next((s for s, dims in sizes.items() if dims[:2] == (depth, hidden)), f"(depth {depth}, hidden {hidden})")
    grid = round((sd["pos_embed"].shape[1] - extra_tokens) ** 0.5)
    out_channels = sd[head].shape[0] // (patch * patch) if head in sd else channels
    return {
        "family": family,
        "size": size,
        "patch": patch,
        "input_size": grid * patch,
        "in_channels": channels,
        "num_classes": sd[table].shape[0] - 1 if table in sd else None,
        "learn_sigma": out_channels == 2 * channels,
        "qk_norm": any(".q_norm." in k for k in sd),
    }


def describe_checkpoint(state_dict: dict) -> str:
    """A short guess of what a state dict holds, e.g. "a DiT-XL/2 checkpoint (input 32, 4 channels, 1000 classes)"."""
    sd = strip_wrappers(state_dict)
    if is_minsnr_vit(sd):
        return "an official Min-SNR ViT checkpoint (convert it with models.convert_minsnr_vit)"
    try:
        c = checkpoint_config(sd)
    except ValueError:
        return "not a DiT or ViT checkpoint (no x_embedder.proj.weight)"
    extras = "".join(f", {name}" for name in ("learn_sigma", "qk_norm") if c[name])
    return (
        f"a {c['family']}-{c['size']}/{c['patch']} checkpoint (input {c['input_size']}, {c['in_channels']} "
        f"channels, {c['num_classes'] if c['num_classes'] is not None else '?'} classes{extras})"
    )


def load_weights(model: nn.Module, state_dict: dict, model_name: str) -> None:
    """Strictly load ``state_dict`` into ``model``, after :func:`check_weights`."""
    model.load_state_dict(check_weights(model, state_dict, model_name), strict=True)


def check_weights(model: nn.Module, state_dict: dict, model_name: str) -> dict:
    """``state_dict`` without DDP / compile prefixes, once it is known to fit ``model`` strictly.

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
    return sd
