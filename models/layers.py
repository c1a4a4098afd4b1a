"""Pieces shared by both backbones: SDPA attention with optional QK-norm, the MLP, the patch embedding, input checks,
(un)patchify, embeddings and the truncated-normal init.

The MLP, patch embedding and init are timm's (same parameter names, same initial draws, same outputs; tested
against timm). They are written here because importing timm imports torchvision, which adds 1.7 s to the start of
every command."""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / memory-efficient on GPU).

    Parameter names follow timm and DiT: ``qkv`` (one [3D, D] linear) and ``proj``. With ``qk_norm`` a LayerNorm
    over each head's dimension is applied to q and k (``q_norm``, ``k_norm``), the usual cure for bf16 logit blow-up.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden size {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, N, D]
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)  # [B, H, N, d]
        x = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)  # [B, H, N, d]
        return self.proj(rearrange(x, "b h n d -> b n (h d)"))  # [B, N, D]


class Mlp(nn.Module):
    """fc2(act(fc1(x))), parameter names fc1 and fc2 as timm's Mlp (and so DiT's and the Min-SNR ViT's weights)."""

    def __init__(self, dim: int, hidden: int, act: Callable[[], nn.Module]):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # [B, N, D] -> [B, N, hidden] -> [B, N, D]


class PatchEmbed(nn.Module):
    """Non-overlapping p×p patches to tokens: one stride-p convolution ``proj``, [B, C, H, W] -> [B, (H/p)·(W/p), D],
    tokens in row-major order."""

    def __init__(self, patch_size: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, h, w] -> [B, h·w, D]


def trunc_normal_(tensor: torch.Tensor, std: float, mean: float = 0.0, a: float = -2.0, b: float = 2.0) -> None:
    """In place: N(mean, std²) truncated to the absolute bounds [a, b], drawn by the inverse CDF as timm (and the
    official Min-SNR ViT) draw it: u ~ U(2Φ(a')−1, 2Φ(b')−1) with a' = (a − mean)/std, then √2·std·erfinv(u) + mean,
    clamped. torch's own ``nn.init.trunc_normal_`` now rejection-samples, which gives other draws."""

    def cdf(x: float) -> float:  # Φ, the standard normal CDF
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    with torch.no_grad():
        tensor.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(std * math.sqrt(2.0)).add_(mean).clamp_(min=a, max=b)


def check_input(x: torch.Tensor, input_size: int, in_channels: int, name: str) -> None:
    """Raise one clear ValueError when x is not [B, in_channels, input_size, input_size]."""
    if x.ndim != 4 or x.shape[1] != in_channels or x.shape[2] != input_size or x.shape[3] != input_size:
        raise ValueError(
            f"{name} expects input [B, {in_channels}, {input_size}, {input_size}], got {list(x.shape)}; "
            f"build the model with input_size/in_channels matching the data"
        )


def check_geometry(input_size: int, patch_size: int, name: str) -> None:
    """The patch grid must tile the input exactly."""
    if input_size % patch_size:
        raise ValueError(f"{name}: input_size {input_size} is not divisible by the patch size {patch_size}")


def unpatchify(x: torch.Tensor, patch_size: int, channels: int) -> torch.Tensor:
    """[B, h*w, p*p*C] tokens (row-major grid, each token ordered (p, q, c) as DiT) -> [B, C, h*p, w*p] image."""
    h = w = math.isqrt(x.shape[1])
    return rearrange(x, "b (h w) (p q c) -> b c (h p) (w q)", h=h, w=w, p=patch_size, q=patch_size, c=channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) t: [cos(t·f_i), sin(t·f_i)], f_i = max_period^(-i/(dim/2)).

    The cos-first order is DiT's, so released DiT weights see the features they were trained on. Computed in
    float32 (float64 when t is float64), whatever the autocast dtype.
    """
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, [grid_size², dim], tokens in row-major order (MAE / DiT layout).

    For the token at row i, column j: the first dim/2 features encode the column j, the last dim/2 the row i,
    each as [sin(pos·ω_k), cos(pos·ω_k)] with ω_k = 10000^(-k/(dim/4)).
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a hidden size divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    pos = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def encode(p: torch.Tensor) -> torch.Tensor:
        angles = p.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    return torch.cat([encode(cols), encode(rows)], dim=1).float()


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, *cond: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """x through every block (``block(x, *cond)``); with ``checkpointing`` each block is recomputed in backward."""
    for block in blocks:
        x = checkpoint(block, x, *cond, use_reentrant=False) if checkpointing else block(x, *cond)
    return x


def size_registry(family: str, cls: type, sizes: dict, patches: tuple[int, ...]) -> dict[str, Callable]:
    """{"<family>-<size>/<patch>": constructor} for sizes {name: (depth, hidden, heads)}; each constructor takes
    the remaining keyword arguments of ``cls``."""

    def builder(depth: int, hidden_size: int, num_heads: int, patch_size: int) -> Callable:
        def build(**kwargs) -> nn.Module:
            return cls(depth=depth, hidden_size=hidden_size, num_heads=num_heads, patch_size=patch_size, **kwargs)

        build.__doc__ = f"{family} with depth {depth}, hidden {hidden_size}, {num_heads} heads, patch {patch_size}."
        return build

    return {f"{family}-{s}/{p}": builder(*dims, p) for s, dims in sizes.items() for p in patches}


def drop_labels(y: torch.Tensor, null: int, p: float, training: bool, drop: torch.Tensor | None) -> torch.Tensor:
    """Classifier-free guidance's label dropout: y [B] with the labels where ``drop`` [B] (bool) is True replaced
    by the null class ``null``. ``drop`` None: in training mode each label is dropped with probability ``p``, drawn
    from the global RNG (train.py passes its own mask instead, drawn once for the whole global batch)."""
    if drop is None:
        if not (training and p > 0):
            return y
        drop = torch.rand(y.shape[0], device=y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)
