"""DiT with adaLN-Zero blocks (Peebles & Xie 2023), written to load facebookresearch/DiT checkpoints strictly.

Parameter names and shapes are DiT's, so ``DiT-XL-2-256x256.pt`` loads with ``load_state_dict(sd, strict=True)``.
The timestep enters through sinusoidal features, so t may be continuous: any float in [0, T) works, and the
integer steps used in training are the special case.
"""

import torch
from torch import nn

from .layers import (
    Attention,
    Mlp,
    PatchEmbed,
    check_geometry,
    check_input,
    drop_labels,
    run_blocks,
    sincos_pos_embed_2d,
    size_registry,
    timestep_embedding,
    unpatchify,
)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, per sample, broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """t -> 256 sinusoidal features -> MLP -> [B, D]."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class label -> [B, D]. Row ``num_classes`` is the null class; training drops labels to it with prob p."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, y: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        y = drop_labels(y, self.num_classes, self.dropout_prob, self.training, drop)
        return self.embedding_table(y)


class DiTBlock(nn.Module):
    """Pre-LN transformer block whose LayerNorms are modulated by c, with zero-initialised residual gates."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: [B, N, D], c: [B, D]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa[:, None] * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp[:, None] * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """Modulated LayerNorm, then a linear map from each token to its p·p·C_out patch values."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Class-conditional DiT. ``model(x, t, y)``: x [B, C, H, W], t [B] (float or int), y [B] int -> [B, C_out, H, W].

    y == num_classes selects the null class (needs ``class_dropout_prob > 0``). C_out = 2C with ``learn_sigma``.
    The optional ``drop`` [B] (bool) is training's label-dropout mask (layers.drop_labels).
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        qk_norm: bool = False,
        grad_checkpoint: bool = False,
    ):
        super().__init__()
        check_geometry(input_size, patch_size, "DiT")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_classes = num_classes
        self.null_class = num_classes if class_dropout_prob > 0 else None  # the unconditional row, if any
        self.grad_checkpoint = grad_checkpoint

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = (input_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's init: Xavier-uniform linears, fixed sin-cos positions, N(0, 0.02) embeddings, and zero for every
        adaLN modulation and the output layer, so that each block starts as the identity and the output is 0."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        grid = self.input_size // self.patch_size
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], grid)[None])
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for layer in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x, self.input_size, self.in_channels, "DiT")
        x = self.x_embedder(x) + self.pos_embed  # [B, N, D], N = (H/p)·(W/p)
        c = self.t_embedder(t) + self.y_embedder(y, drop)  # [B, D]
        checkpointing = self.grad_checkpoint and self.training and torch.is_grad_enabled()
        x = run_blocks(self.blocks, x, c, checkpointing=checkpointing)  # [B, N, D]
        x = self.final_layer(x, c)  # [B, N, p·p·C_out]
        return unpatchify(x, self.patch_size, self.out_channels)  # [B, C_out, H, W]


# name -> (depth, hidden, heads). T is a tiny size for CPU work; S, B, L and XL are DiT's.
DIT_SIZES = {"T": (6, 128, 4), "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
DiT_models = size_registry("DiT", DiT, DIT_SIZES, (2, 4, 8))
