"""A DiT in diffusers' layout (``DiTTransformer2DModel``), its scheduler config, and the frequency fix.

diffusers' DiT differs from DiT in one place besides names: its timestep features are computed with
``downscale_freq_shift=1``, i.e. frequencies max_period^(−i/(half − 1)) where DiT uses max_period^(−i/half).
So no export into the stock class reproduces a DiT exactly. :func:`use_dit_frequencies` sets the shift to 0
on a loaded model, after which its outputs equal ours to float rounding.
"""

import torch
from torch import nn

from .dit import DiT

BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear", "scaled_linear": "scaled_linear"}
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def transformer_config(model: DiT) -> dict:
    """``DiTTransformer2DModel`` keyword arguments that build the same network as ``model``."""
    hidden = model.pos_embed.shape[-1]
    heads = model.blocks[0].attn.num_heads
    return {
        "num_attention_heads": heads,
        "attention_head_dim": hidden // heads,
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "num_layers": len(model.blocks),
        "sample_size": model.input_size,
        "patch_size": model.patch_size,
        "num_embeds_ada_norm": model.num_classes,
        "norm_eps": 1e-6,  # DiT's LayerNorms; diffusers' default is 1e-5
    }


def transformer_state_dict(model: DiT) -> dict[str, torch.Tensor]:
    """Our DiT's weights under diffusers' names. diffusers keeps a copy of the t and y embedders in every block
    (``transformer_blocks.i.norm1.emb``); each gets the shared one. A model trained without label dropout gets a
    zero null-class row, since diffusers' table always has one."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hidden = sd["pos_embed"].shape[-1]
    table = sd["y_embedder.embedding_table.weight"]
    if table.shape[0] == model.num_classes:
        table = torch.cat([table, table.new_zeros(1, hidden)])
    embedders = {
        "timestep_embedder.linear_1.weight": sd["t_embedder.mlp.0.weight"],
        "timestep_embedder.linear_1.bias": sd["t_embedder.mlp.0.bias"],
        "timestep_embedder.linear_2.weight": sd["t_embedder.mlp.2.weight"],
        "timestep_embedder.linear_2.bias": sd["t_embedder.mlp.2.bias"],
        "class_embedder.embedding_table.weight": table,
    }
    out = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"],
        "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"],
        "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    for i in range(len(model.blocks)):
        ours, theirs = f"blocks.{i}.", f"transformer_blocks.{i}."
        out |= {f"{theirs}norm1.emb.{k}": v.clone() for k, v in embedders.items()}
        for part in ("weight", "bias"):
            q, k, v = sd[f"{ours}attn.qkv.{part}"].chunk(3)  # [3D, ...] is q, k, v in that order
            out |= {f"{theirs}attn1.to_q.{part}": q, f"{theirs}attn1.to_k.{part}": k, f"{theirs}attn1.to_v.{part}": v}
            out[f"{theirs}attn1.to_out.0.{part}"] = sd[f"{ours}attn.proj.{part}"]
            out[f"{theirs}norm1.linear.{part}"] = sd[f"{ours}adaLN_modulation.1.{part}"]
            out[f"{theirs}ff.net.0.proj.{part}"] = sd[f"{ours}mlp.fc1.{part}"]
            out[f"{theirs}ff.net.2.{part}"] = sd[f"{ours}mlp.fc2.{part}"]
    return {k: v.contiguous() for k, v in out.items()}


def scheduler_config(prediction: str, noise_schedule: str, diffusion_steps: int) -> dict:
    """A ``DDIMScheduler`` config on the checkpoint's schedule and target. ``set_alpha_to_one`` and "leading"
    spacing make its DDIM the same chain as ours (``ddimN`` respacing) when N divides T."""
    config = {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": diffusion_steps,
        "beta_schedule": BETA_SCHEDULES[noise_schedule],
        "prediction_type": PREDICTION_TYPES[prediction],
        "clip_sample": False,
        "set_alpha_to_one": True,
        "timestep_spacing": "leading",
        "steps_offset": 0,
    }
    if noise_schedule == "linear":  # ADM's rule: β from 1e-4 to 0.02 at T = 1000, scaled by 1000/T
        config |= {"beta_start": 1e-4 * 1000 / diffusion_steps, "beta_end": 0.02 * 1000 / diffusion_steps}
    elif noise_schedule == "scaled_linear":
        config |= {"beta_start": 0.00085, "beta_end": 0.012}
    return config


def use_dit_frequencies(transformer: nn.Module) -> nn.Module:
    """Make a loaded ``DiTTransformer2DModel`` compute DiT's timestep features (``downscale_freq_shift = 0``)."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return transformer
