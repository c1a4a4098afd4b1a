"""Training data: the embedded Fashion-MNIST default, pre-extracted latents, or an image folder (pixels or VAE)."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .fashion_mnist import FashionMNIST
from .images import ImageFolder
from .latents import MANIFEST, LatentShards, draw_latents
from .order import ResumableSampler
from .vae import SCALE_FACTOR, load_vae

__all__ = ["FashionMNIST", "ImageFolder", "LatentShards", "ResumableSampler", "TrainingData", "open_training_data"]


@dataclass
class TrainingData:
    """A dataset plus what turns one of its batches into x0 for the diffusion loss.

    ``kind`` is "pixel" (x0 = the batch), "latent" (draw a flip and a posterior sample from stored moments) or
    "vae" (flip the images, then encode them with ``vae`` and sample its posterior). ``shape`` is x0's [C, H, W].
    ``decoder`` names the VAE that maps x0 back to images (None in pixel space); checkpoints record it for sampling.
    """

    dataset: Dataset
    kind: str
    shape: tuple[int, int, int]
    num_classes: int
    description: str
    vae: torch.nn.Module | None = None
    scale_factor: float = 1.0
    hflip: bool = False
    decoder: str | None = None

    def record(self) -> dict:
        """What a sampler needs to know of the data: shape, class count and the decoder with its scale."""
        return {"shape": list(self.shape), "num_classes": self.num_classes, "decoder": self.decoder,
                "scale_factor": self.scale_factor, "description": self.description}  # fmt: skip

    @torch.no_grad()
    def prepare(self, batch: torch.Tensor, generator: torch.Generator, rows: slice, n: int) -> torch.Tensor:
        """A loaded batch -> x0 [B, C, H, W] in float32. Random choices are drawn for the whole global batch from
        ``generator`` (seeded alike on every rank; ``n`` = global batch size) and ``rows`` picks this rank's part,
        so the draws for an image do not depend on the number of processes."""
        device = batch.device
        if self.kind == "latent":
            return draw_latents(batch, self.scale_factor, generator, rows, n)
        if self.hflip:
            flip = (torch.rand(n, device=device, generator=generator) < 0.5)[rows]
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        if self.kind == "vae":
            posterior = self.vae.encode(batch).latent_dist
            noise = torch.randn((n, *self.shape), device=device, generator=generator)[rows]
            return self.scale_factor * (posterior.mean + posterior.std * noise)
        return batch.float()


def open_training_data(path: str | None, vae: str = "mse", image_size: int = 256, device="cpu") -> TrainingData:
    """``path`` None -> Fashion-MNIST (pixel space, 1×32×32, 10 classes); a directory with ``manifest.json`` ->
    latents; any other directory -> an image folder, encoded on the fly by ``vae`` or in pixels with vae "none".
    Raises ValueError (one line) for a missing or empty path."""
    if path is None:
        ds = FashionMNIST("train")
        return TrainingData(ds, "pixel", ds.shape, ds.num_classes, "Fashion-MNIST train (60K, pixel space)")
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"--data-path {path} does not exist or is not a directory")
    if (root / MANIFEST).exists():
        ds = LatentShards(root)
        if len(ds) == 0:
            raise ValueError(f"--data-path {path}: the manifest lists no latents")
        desc = f"latents {path} ({len(ds)} images, VAE {ds.meta.get('vae')})"
        return TrainingData(ds, "latent", ds.shape, ds.num_classes, desc, scale_factor=ds.scale_factor,
                            decoder=ds.meta.get("vae"))  # fmt: skip
    ds = ImageFolder(root, image_size)
    if vae == "none":
        return TrainingData(ds, "pixel", ds.shape, ds.num_classes, f"images {path} (pixel space)", hflip=True)
    model = load_vae(vae, device)
    down = 2 ** (len(model.config.block_out_channels) - 1)  # 8 for the SD VAE
    shape = (model.config.latent_channels, image_size // down, image_size // down)
    desc = f"images {path} encoded by VAE {vae}"
    return TrainingData(ds, "vae", shape, ds.num_classes, desc, vae=model, scale_factor=SCALE_FACTOR, hflip=True,
                        decoder=vae)  # fmt: skip
