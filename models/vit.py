"""The Min-SNR paper's plain ViT (Hang et al. 2023, Table 6): time and class enter as two extra tokens.

Tokens are [time, class, patch_1 .. patch_N] plus a learned position embedding over all N + 2 of them, followed by
pre-LN blocks and a linear head on the patch tokens only. As in the official code there is no final LayerNorm.
The timestep is a row of a learned table, so t must be an integer tensor with values in [0, num_timesteps).
Official checkpoints (``ema_0.9999_xl.pt``) load through ``models.convert.convert_minsnr_vit``.
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
    size_registry,
    trunc_normal_,
    unpatchify,
)


class Block(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)); LayerNorm eps 1e-6, exact GELU."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, qk_norm: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """``model(x, t, y)``: x [B, C, H, W], t [B] int in [0, num_timesteps), y [B] int -> [B, C_out, H, W].

    y == num_classes selects the null class (row num_classes of the class table, always present).
    C_out = 2C with ``learn_sigma``. Label dropout to the null class happens in training mode; the optional
    ``drop`` [B] (bool) gives its mask (layers.drop_labels).
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = False,
        num_timesteps: int = 1000,
        head_init_scale: float = 0.001,
        qk_norm: bool = False,
        grad_checkpoint: bool = False,
    ):
        super().__init__()
        check_geometry(input_size, patch_size, "ViT")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_classes, self.num_timesteps = num_classes, num_timesteps
        self.null_class = num_classes  # the unconditional row
        self.class_dropout_prob = class_dropout_prob
        self.head_init_scale = head_init_scale
        self.grad_checkpoint = grad_checkpoint

        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = nn.Embedding(num_timesteps, hidden_size)
        self.y_embedder = nn.Embedding(num_classes + 1, hidden_size)
        num_tokens = (input_size // patch_size) ** 2 + 2
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, hidden_size))
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.head = nn.Linear(hidden_size, patch_size * patch_size * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official init: truncated N(0, 0.02) linears and positions, unit LayerNorms, N(0, 1) time and class
        tables, PyTorch's default patch conv, attn.proj and mlp.fc2 of block l scaled by 1/√(2l), and the head
        scaled by ``head_init_scale`` (0.001)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        trunc_normal_(self.pos_embed, std=0.02)
        self.x_embedder.proj.reset_parameters()
        nn.init.normal_(self.t_embedder.weight, std=1.0)
        nn.init.normal_(self.y_embedder.weight, std=1.0)
        with torch.no_grad():
            for layer_id, block in enumerate(self.blocks, start=1):
                block.attn.proj.weight.div_((2.0 * layer_id) ** 0.5)
                block.mlp.fc2.weight.div_((2.0 * layer_id) ** 0.5)
            self.head.weight.mul_(self.head_init_scale)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        check_input(x, self.input_size, self.in_channels, "ViT")
        if t.is_floating_point():
            raise TypeError("ViT looks t up in a table: pass integer timesteps (torch.long), not floats")
        y = drop_labels(y, self.num_classes, self.class_dropout_prob, self.training, drop)
        tokens = [self.t_embedder(t)[:, None], self.y_embedder(y)[:, None], self.x_embedder(x)]
        x = torch.cat(tokens, dim=1) + self.pos_embed  # [B, 2 + N, D]
        checkpointing = self.grad_checkpoint and self.training and torch.is_grad_enabled()
        x = run_blocks(self.blocks, x, checkpointing=checkpointing)  # [B, 2 + N, D]
        x = self.head(x[:, 2:])  # [B, N, p·p·C_out]
        return unpatchify(x, self.patch_size, self.out_channels)  # [B, C_out, H, W]


# name -> (depth, hidden, heads), paper Table 6; S gets 8 heads (the printed 6 does not divide 512). T is for CPUs.
VIT_SIZES = {"T": (6, 128, 4), "S": (13, 512, 8), "B": (12, 768, 12), "L": (21, 1024, 16), "XL": (28, 1152, 16)}
ViT_models = size_registry("ViT", ViT, VIT_SIZES, (2, 4))
