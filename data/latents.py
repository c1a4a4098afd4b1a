"""Pre-extracted SD-VAE latents: shards of posterior moments for each image and its horizontal flip.

A directory holds ``manifest.json`` and ``shard-NNNNN.npy`` files. Each shard is float16 [n, 2, 2, C, h, w]:
axis 1 is (image, flipped image), axis 2 is (posterior mean, posterior std). Training draws a flip and a
posterior sample every step: z = scale_factor · (mean + std · ε).
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.atomic import atomic_write, write_text_atomic

MANIFEST = "manifest.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npy"


def write_shard(path: Path, moments: np.ndarray) -> None:
    """Write one shard atomically, so a finished shard is never half-written."""
    with atomic_write(path) as tmp, tmp.open("wb") as f:
        np.save(f, moments.astype(np.float16))


def write_manifest(directory: Path, shards: list[dict], **meta) -> None:
    """``shards`` = [{"file", "labels"}]; ``meta`` holds classes, vae, scale_factor, image_size, latent_shape and
    normalization ({"mean", "std"} per channel of the unscaled latents z = μ + σ·ε)."""
    write_text_atomic(directory / MANIFEST, json.dumps({"format": 1, **meta, "shards": shards}, indent=1))


class LatentShards(Dataset):
    """Items (moments float16 [2, 2, C, h, w], label int) from an ``extract_features.py`` directory."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        try:
            self.meta = json.loads((directory / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{directory}/{MANIFEST} is missing or corrupt: {err}") from None
        self.directory = directory
        self.shards = [np.load(directory / s["file"], mmap_mode="r") for s in self.meta["shards"]]
        for s, array in zip(self.meta["shards"], self.shards, strict=True):
            if len(array) != len(s["labels"]) or array.shape[1:3] != (2, 2):
                raise ValueError(f"{directory / s['file']}: shape {array.shape} does not match the manifest")
        self.labels = np.concatenate([np.asarray(s["labels"], dtype=np.int64) for s in self.meta["shards"]])
        self.starts = np.cumsum([0] + [len(a) for a in self.shards])
        self.shape = tuple(self.meta["latent_shape"])
        self.num_classes = len(self.meta["classes"])
        self.scale_factor = float(self.meta["scale_factor"])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return torch.from_numpy(np.array(self.shards[k][i - self.starts[k]])), int(self.labels[i])


def draw_latents(
    moments: torch.Tensor, scale_factor: float, generator: torch.Generator, rows: slice, n: int
) -> torch.Tensor:
    """[B, 2, 2, C, h, w] moments -> [B, C, h, w] latents: a fair coin picks the flip, then
    z = scale_factor · (mean + std · ε), ε ~ N(0, I). Draws are made for all ``n`` images of the global batch
    and ``rows`` of them are used, so a rank's share gets the same draws whatever the world size."""
    b, device = moments.shape[0], moments.device
    flip = torch.randint(0, 2, (n,), device=device, generator=generator)[rows]
    chosen = moments[torch.arange(b, device=device), flip].float()  # [B, 2, C, h, w]
    eps = torch.randn((n, *chosen.shape[2:]), device=device, generator=generator)[rows]
    return scale_factor * (chosen[:, 0] + chosen[:, 1] * eps)
