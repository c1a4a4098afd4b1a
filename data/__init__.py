"""Training data: the embedded Fashion-MNIST default, pre-extracted latents, or an image folder (pixels or VAE)."""

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .fashion_mnist import FashionMNIST
from .images import ImageFolder
from .latents import MANIFEST, LatentShards, draw_latents
from .normalization import NORMALIZATIONS, Normalization, channel_stats
from .order import ResumableSampler
from .transform import DataTransform, Scale
from .vae import SCALE_FACTOR, load_vae

__all__ = [
    "FashionMNIST",
    "ImageFolder",
    "LatentShards",
    "Normalization",
    "ResumableSampler",
    "Scale",
    "TrainingData",
    "open_training_data",
]


@dataclass
class TrainingData:
    """A dataset plus what turns one of its batches into x0 for the diffusion loss.

    ``kind`` is "pixel" (the batch), "latent" (draw a flip and a posterior sample from stored moments) or "vae"
    (flip the images, then encode them with ``vae`` and sample its posterior); ``transform`` then maps that to x0
    (data/transform.py: the latent scale, or per-channel normalisation with ``--data-norm channel``).
    ``shape`` is x0's [C, H, W]. ``decoder`` names the VAE that maps x0 back to images (None in pixel space).
    Checkpoints record the decoder and the transform; sampling inverts the transform, then decodes.
    """

    dataset: Dataset
    kind: str
    shape: tuple[int, int, int]
    num_classes: int
    description: str
    vae: torch.nn.Module | None = None
    transform: DataTransform = Scale(1.0)
    hflip: bool = False
    decoder: str | None = None

    def record(self) -> dict:
        """What a sampler needs to know of the data besides the transform: shape, class count and decoder."""
        return {
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "decoder": self.decoder,
            "description": self.description,
        }

    @torch.no_grad()
    def prepare(self, batch: torch.Tensor, generator: torch.Generator, rows: slice, n: int) -> torch.Tensor:
        """A loaded batch -> x0 [B, C, H, W] in float32. Random choices are drawn for the whole global batch from
        ``generator`` (seeded alike on every rank; ``n`` = global batch size) and ``rows`` picks this rank's part,
        so the draws for an image do not depend on the number of processes."""
        device = batch.device
        if self.kind == "latent":
            return self.transform.apply(draw_latents(batch, 1.0, generator, rows, n))
        if self.hflip:
            flip = (torch.rand(n, device=device, generator=generator) < 0.5)[rows]
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        if self.kind == "vae":
            posterior = self.vae.encode(batch).latent_dist
            noise = torch.randn((n, *self.shape), device=device, generator=generator)[rows]
            return self.transform.apply(posterior.mean + posterior.std * noise)
        return self.transform.apply(batch.float())


def open_training_data(
    path: str | None, vae: str = "mse", image_size: int = 256, device="cpu", data_norm: str = "none"
) -> TrainingData:
    """``path`` None -> Fashion-MNIST (pixel space, 1×32×32, 10 classes); a directory with ``manifest.json`` ->
    latents; any other directory -> an image folder, encoded on the fly by ``vae`` or in pixels with vae "none".
    ``data_norm`` "channel" standardises each channel: latents with the manifest's statistics, pixel data with
    statistics computed now over the whole training set. Raises ValueError (one line) for a missing or empty
    path, or for statistics that are missing or bad."""
    if data_norm not in NORMALIZATIONS:
        raise ValueError(f"unknown --data-norm {data_norm!r}; valid: {', '.join(NORMALIZATIONS)}")
    normalize = data_norm == "channel"
    if path is None:
        ds = FashionMNIST("train")
        transform = Scale(1.0)
        if normalize:
            transform = channel_stats(ds.images[i : i + 10_000].float() / 127.5 - 1 for i in range(0, len(ds), 10_000))
        return TrainingData(
            ds, "pixel", ds.shape, ds.num_classes, "Fashion-MNIST train (60K, pixel space)", transform=transform
        )
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"--data-path {path} does not exist or is not a directory")
    if (root / MANIFEST).exists():
        ds = LatentShards(root)
        if len(ds) == 0:
            raise ValueError(f"--data-path {path}: the manifest lists no latents")
        desc = f"latents {path} ({len(ds)} images, VAE {ds.meta.get('vae')})"
        transform = Scale(ds.scale_factor)
        if normalize:
            if "normalization" not in ds.meta:
                raise ValueError(
                    f"--data-norm channel: {root / MANIFEST} has no normalisation statistics; re-run "
                    "extract_features.py on the same --out (finished shards are kept) to add them"
                )
            transform = Normalization.from_record(ds.meta["normalization"], ds.shape[0], str(root / MANIFEST))
        return TrainingData(
            ds, "latent", ds.shape, ds.num_classes, desc, transform=transform, decoder=ds.meta.get("vae")
        )
    ds = ImageFolder(root, image_size)
    if vae == "none":
        transform = Scale(1.0)
        if normalize:  # one pass over the folder (its flips have the same per-channel statistics)
            transform = channel_stats(x for x, _ in torch.utils.data.DataLoader(ds, batch_size=256))
        return TrainingData(
            ds, "pixel", ds.shape, ds.num_classes, f"images {path} (pixel space)", hflip=True, transform=transform
        )
    if normalize:
        raise ValueError(
            "--data-norm channel needs pre-extracted latents (their statistics are computed once by "
            "extract_features.py); extract them, or train in pixels with --vae none"
        )
    model = load_vae(vae, device)
    down = 2 ** (len(model.config.block_out_channels) - 1)  # 8 for the SD VAE
    shape = (model.config.latent_channels, image_size // down, image_size // down)
    desc = f"images {path} encoded by VAE {vae}"
    return TrainingData(
        ds, "vae", shape, ds.num_classes, desc, vae=model, transform=Scale(SCALE_FACTOR), hflip=True, decoder=vae
    )
