"""Sample bookkeeping: labels, per-sample noise, quantisation, and the shard files behind the final ADM ``.npz``.

Sample i has label i mod K (class-balanced, interleaved) and its own generator seeded base + i, so its pixels do
not depend on how many processes share the work. Batches are written as shards ``shards/NNNNNNN.npz`` (the index
of their first sample), atomically; rank 0 streams the shards into one ``.npz`` that never sits in memory.
"""

import zipfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from training.atomic import atomic_write


def class_labels(start: int, stop: int, num_classes: int) -> torch.Tensor:
    """Labels of samples start … stop−1: i mod ``num_classes`` (N/K of each class when K divides N)."""
    return torch.arange(start, stop) % num_classes


class PerSampleNoise:
    """Standard normal draws where sample i always gets the stream of ``torch.Generator().manual_seed(seed + i)``,
    on the CPU whatever the device, so a sample's noise is independent of batch size, rank and device."""

    def __init__(self, seed: int, start: int, stop: int):
        self.generators = [torch.Generator().manual_seed(seed + i) for i in range(start, stop)]

    def __call__(self, like: torch.Tensor) -> torch.Tensor:
        """One draw of ``like``'s per-sample shape for every sample, as ``like``'s device and dtype."""
        draws = [torch.randn(like.shape[1:], generator=g) for g in self.generators]
        return torch.stack(draws).to(like.device, like.dtype)


def quantize(x: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], [B, C, H, W] -> uint8 NHWC by DiT's rule clamp(127.5·x + 128, 0, 255), truncated. ADM's
    ((x + 1)·127.5) truncates half a level lower; the +128 gives pixels p/127.5 − 1 back as p exactly."""
    return (127.5 * x.float() + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(images: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """uint8 images [N, H, W, C] -> one [rows·(H+p)+p, columns·(W+p)+p, C] image, row by row, with black gaps of p
    pixels around every image and black cells after the last one: torchvision's ``make_grid`` layout, without the
    1.7 s its import adds to every command's start. One image is returned as it is, as make_grid does."""
    n, h, w, c = images.shape
    if n == 1:
        return images[0]
    columns = min(columns, n)
    rows = -(-n // columns)
    cells = np.zeros((rows * columns, h + padding, w + padding, c), images.dtype)
    cells[:n, padding:, padding:] = images  # each cell: the gap above and to the left, then the image
    grid = rearrange(cells, "(r k) h w c -> (r h) (k w) c", r=rows)
    return np.pad(grid, ((0, padding), (0, padding), (0, 0)))  # the gap below the last row and right of the last column


def shard_path(directory: Path, start: int) -> Path:
    return directory / f"{start:07d}.npz"


def write_shard(directory: Path, start: int, images: np.ndarray, labels: np.ndarray) -> None:
    """Write one batch (uint8 NHWC images and int64 labels) as ``arr_0``/``arr_1``, atomically."""
    with atomic_write(shard_path(directory, start)) as tmp, tmp.open("wb") as f:
        np.savez(f, arr_0=images, arr_1=labels.astype(np.int64))


def read_shard(path: Path, key: str) -> np.ndarray:
    """One array of a shard ("arr_0" images or "arr_1" labels); only that member is read."""
    with np.load(path, allow_pickle=False) as f:
        return f[key]


def _image_shape(path: Path) -> tuple[int, ...]:
    """The shape of a shard's ``arr_0``, read from its .npy header without loading the images."""
    with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        return read(f)[0]


def assemble_npz(shards: list[Path], out: Path) -> int:
    """Concatenate ``shards`` (in order) into ``out`` in ADM's layout, ``arr_0`` uint8 [N, H, W, C] and ``arr_1``
    int64 [N], as the uncompressed npz that ``np.savez`` writes, holding one shard in memory at a time; atomic.
    Returns N."""
    shapes = [_image_shape(p) for p in shards]
    if len({s[1:] for s in shapes}) != 1:
        raise ValueError(f"shards disagree on the image shape: {sorted({s[1:] for s in shapes})}")
    labels = np.concatenate([read_shard(p, "arr_1") for p in shards])
    images_shape = (len(labels), *shapes[0][1:])
    with atomic_write(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        with z.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": images_shape})
            for path in shards:
                f.write(np.ascontiguousarray(read_shard(path, "arr_0")).tobytes())
        with z.open("arr_1.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, labels.astype(np.int64), allow_pickle=False)
    return len(labels)
