"""Converter from the official Min-SNR ViT checkpoints (TiankaiHang/Min-SNR-Diffusion-Training) to our ViT.

The official layout (``guided_diffusion/vision_transformer.py``) differs from ours in names, in its attention bias
(a bias-free qkv linear plus separate ``q_bias`` and ``v_bias``; k has none) and in a 4000-row time table of which
only rows 0..999 are ever indexed. A k bias adds q·b_k to every logit of a query row, which softmax ignores, so
writing zeros there reproduces the official attention exactly.

Released DiT checkpoints need no converter: ``models.DiT`` uses DiT's own names.
"""

import torch

from .vit import VIT_SIZES

_RENAMES = {"patch_embed.proj.": "x_embedder.proj.", "linear_projection.": "head."}
_BLOCK_KEYS = (
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "attn.qkv.weight",
    "attn.q_bias",
    "attn.v_bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)


def strip_wrappers(state_dict: dict) -> dict:
    """Drop the prefixes that DDP ("module.") and torch.compile ("_orig_mod.") add to every key."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def count_blocks(state_dict: dict) -> int:
    """The number of distinct ``blocks.<i>.`` indices in a state dict."""
    return len({k.split(".")[1] for k in state_dict if k.startswith("blocks.")})


def is_minsnr_vit(state_dict: dict) -> bool:
    """True for a state dict in the official Min-SNR ViT layout."""
    return "time_embedding.weight" in state_dict and "patch_embed.proj.weight" in state_dict


def convert_minsnr_vit(state_dict: dict, num_timesteps: int = 1000) -> tuple[dict, str, dict]:
    """Official Min-SNR ViT state dict -> (our state dict, registry name, constructor kwargs).

    The class table's last row is the null class: the official sampler builds the model with 1001 classes and
    passes label 1000 for the unconditional half, so rows = num_classes + 1 as in ours.
    Load the result with ``ViT_models[name](**kwargs).load_state_dict(sd, strict=True)``.
    """
    sd = {k: v.float() for k, v in strip_wrappers(state_dict).items()}
    depth = count_blocks(sd)
    expected = {
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "time_embedding.weight",
        "class_embedding.weight",
        "pos_embed",
        "linear_projection.weight",
        "linear_projection.bias",
    }
    expected |= {f"blocks.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS}
    if unknown := sorted(set(sd) - expected):
        raise ValueError(
            f"official ViT checkpoint uses options this ViT does not implement (layer scale, relative position "
            f"bias, conv head or final norm): unexpected keys {unknown[:4]}"
        )
    if missing := sorted(expected - set(sd)):
        raise ValueError(f"official ViT checkpoint is incomplete or class-unconditional: missing keys {missing[:4]}")

    hidden, in_channels, patch, _ = sd["patch_embed.proj.weight"].shape
    sizes = {dims[:2]: s for s, dims in VIT_SIZES.items()}
    if (depth, hidden) not in sizes:
        raise ValueError(f"no registered ViT size has depth {depth} and hidden size {hidden}; see models.VIT_SIZES")
    name = f"ViT-{sizes[depth, hidden]}/{patch}"
    if sd["time_embedding.weight"].shape[0] < num_timesteps:
        raise ValueError(f"official time table has {sd['time_embedding.weight'].shape[0]} rows < {num_timesteps}")
    out_channels = sd["linear_projection.weight"].shape[0] // patch**2
    kwargs = {
        "input_size": int(round((sd["pos_embed"].shape[1] - 2) ** 0.5)) * patch,
        "in_channels": in_channels,
        "num_classes": sd["class_embedding.weight"].shape[0] - 1,
        "learn_sigma": out_channels == 2 * in_channels,
        "num_timesteps": num_timesteps,
    }

    out = {}
    for key, value in sd.items():
        if key == "time_embedding.weight":
            out["t_embedder.weight"] = value[:num_timesteps]
        elif key == "class_embedding.weight":
            out["y_embedder.weight"] = value
        elif key.endswith("attn.q_bias"):
            v_bias = sd[key.replace("q_bias", "v_bias")]
            out[key.replace("q_bias", "qkv.bias")] = torch.cat([value, torch.zeros_like(value), v_bias])
        elif not key.endswith("attn.v_bias"):
            prefix = next((p for p in _RENAMES if key.startswith(p)), None)
            out[key if prefix is None else _RENAMES[prefix] + key.removeprefix(prefix)] = value
    return out, name, kwargs
