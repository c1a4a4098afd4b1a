"""Small random stand-ins for hub weights that cannot be downloaded here."""

from pathlib import Path

import torch
from diffusers import AutoencoderKL


def save_tiny_vae(path: Path) -> Path:
    """A 2-level AutoencoderKL (4 latent channels, 2× down-sampling) with seed-0 random weights, saved as the
    directory ``--vae DIR`` loads; it stands in for the SD VAE in the data, latent and decoding paths."""
    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=16,
    ).save_pretrained(path)
    return path
