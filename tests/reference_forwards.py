"""Independent forward passes of the two reference architectures, in plain torch ops on raw state dicts.

``dit_forward`` follows facebookresearch/DiT's ``models.py`` math with DiT's key names; ``official_vit_forward``
follows the official Min-SNR ``guided_diffusion/vision_transformer.py`` with its own key names (q_bias / v_bias,
4000-row time table, linear_projection). Neither uses anything from ``models``: patches come from ``unfold``,
attention from an explicit softmax, the position embedding from numpy.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def mae_pos_embed(dim: int, grid: int) -> np.ndarray:
    """MAE's 2-D sin-cos table: meshgrid(w, h), first half encodes grid[0] (the column), second half the row."""

    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
    return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


def _patches(x, p):
    """[B, C, H, W] -> [B, (H/p)(W/p), C·p·p], rows of the grid first, each patch flattened (c, i, j) like a conv."""
    b, c, h, w = x.shape
    u = x.unfold(2, p, p).unfold(3, p, p)  # [B, C, h, w, p, p]
    return u.permute(0, 2, 3, 1, 4, 5).reshape(b, (h // p) * (w // p), c * p * p)


def _unpatchify(tokens, p, c):
    """[B, h·w, p·p·c] with each token laid out (row-in-patch, col-in-patch, channel) -> [B, c, h·p, w·p]."""
    b, n, _ = tokens.shape
    g = math.isqrt(n)
    return tokens.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, g * p, g * p)


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _attention(h, w_qkv, b_qkv, heads, sd, proj):
    b, n, d = h.shape
    qkv = (h @ w_qkv.T + b_qkv).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    att = torch.softmax(q * (d // heads) ** -0.5 @ k.transpose(-1, -2), dim=-1)
    return _linear((att @ v).transpose(1, 2).reshape(b, n, d), sd, proj)


def dit_forward(sd, x, t, y, patch, heads, out_channels):
    """DiT: adaLN-Zero blocks; modulation chunks (shift, scale, gate) × (msa, mlp); tanh-GELU; cos-first t-features."""
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    d = sd["pos_embed"].shape[-1]
    w = sd["x_embedder.proj.weight"]
    h = _patches(x, patch) @ w.reshape(w.shape[0], -1).T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    half = 128
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=x.dtype) / half)
    ang = t.to(x.dtype)[:, None] * freqs
    temb = torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)
    c = _linear(F.silu(_linear(temb, sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    c = c + sd["y_embedder.embedding_table.weight"][y]

    def ln(z):
        return F.layer_norm(z, (d,), eps=1e-6)

    for i in range(depth):
        pre = f"blocks.{i}"
        mod = _linear(F.silu(c), sd, f"{pre}.adaLN_modulation.1")[:, None]
        sh1, sc1, g1, sh2, sc2, g2 = (mod[..., j * d : (j + 1) * d] for j in range(6))
        a = ln(h) * (1 + sc1) + sh1
        h = h + g1 * _attention(
            a, sd[f"{pre}.attn.qkv.weight"], sd[f"{pre}.attn.qkv.bias"], heads, sd, f"{pre}.attn.proj"
        )
        m = ln(h) * (1 + sc2) + sh2
        m = _linear(F.gelu(_linear(m, sd, f"{pre}.mlp.fc1"), approximate="tanh"), sd, f"{pre}.mlp.fc2")
        h = h + g2 * m
    mod = _linear(F.silu(c), sd, "final_layer.adaLN_modulation.1")[:, None]
    h = ln(h) * (1 + mod[..., d:]) + mod[..., :d]
    return _unpatchify(_linear(h, sd, "final_layer.linear"), patch, out_channels)


def official_vit_forward(sd, x, t, y, patch, heads, out_channels):
    """The official Min-SNR ViT: [time, class, patches] + pos; pre-LN blocks (eps 1e-6, exact GELU) with qkv bias
    (q_bias, 0, v_bias); no final norm; linear_projection on patch tokens; unpatchify 'nhwpqc->nchpwq'."""
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    d = sd["pos_embed"].shape[-1]
    w = sd["patch_embed.proj.weight"]
    tokens = _patches(x, patch) @ w.reshape(w.shape[0], -1).T + sd["patch_embed.proj.bias"]
    h = torch.cat([sd["time_embedding.weight"][t][:, None], sd["class_embedding.weight"][y][:, None], tokens], 1)
    h = h + sd["pos_embed"]
    for i in range(depth):
        pre = f"blocks.{i}"

        def ln(z, name):
            return F.layer_norm(z, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

        q_bias, v_bias = sd[f"{pre}.attn.q_bias"], sd[f"{pre}.attn.v_bias"]
        bias = torch.cat([q_bias, torch.zeros_like(q_bias), v_bias])
        h = h + _attention(ln(h, f"{pre}.norm1"), sd[f"{pre}.attn.qkv.weight"], bias, heads, sd, f"{pre}.attn.proj")
        m = _linear(F.gelu(_linear(ln(h, f"{pre}.norm2"), sd, f"{pre}.mlp.fc1")), sd, f"{pre}.mlp.fc2")
        h = h + m
    return _unpatchify(_linear(h[:, 2:], sd, "linear_projection"), patch, out_channels)


def random_official_vit_state_dict(depth, dim, patch, in_ch, out_ch, grid, rows, time_rows=4000, seed=0):
    """A randomly initialised state dict in the official key layout (fp32)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=0.1):
        return torch.randn(*shape, generator=g) * s

    sd = {
        "patch_embed.proj.weight": r(dim, in_ch, patch, patch, s=0.3),
        "patch_embed.proj.bias": r(dim),
        "pos_embed": r(1, grid * grid + 2, dim),
        "time_embedding.weight": r(time_rows, dim, s=1.0),
        "class_embedding.weight": r(rows, dim, s=1.0),
        "linear_projection.weight": r(patch * patch * out_ch, dim),
        "linear_projection.bias": r(patch * patch * out_ch),
    }
    for i in range(depth):
        pre = f"blocks.{i}"
        sd |= {
            f"{pre}.norm1.weight": 1 + r(dim),
            f"{pre}.norm1.bias": r(dim),
            f"{pre}.norm2.weight": 1 + r(dim),
            f"{pre}.norm2.bias": r(dim),
            f"{pre}.attn.qkv.weight": r(3 * dim, dim),
            f"{pre}.attn.q_bias": r(dim, s=0.5),
            f"{pre}.attn.v_bias": r(dim, s=0.5),
            f"{pre}.attn.proj.weight": r(dim, dim),
            f"{pre}.attn.proj.bias": r(dim),
            f"{pre}.mlp.fc1.weight": r(4 * dim, dim),
            f"{pre}.mlp.fc1.bias": r(4 * dim),
            f"{pre}.mlp.fc2.weight": r(dim, 4 * dim),
            f"{pre}.mlp.fc2.bias": r(dim),
        }
    return sd
