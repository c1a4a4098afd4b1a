"""ImageNet-style image folders with ADM's center crop (the preprocessing behind every ImageNet FID table)."""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

TO_RGB = ("1", "L", "P", "RGB", "CMYK", "YCbCr")  # modes read as RGB; ImageNet holds grey and CMYK JPEGs


def image_header(path: str | Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (width, height)) from ``path``'s header, or one clear ValueError: not an image, or a mode that has
    no single RGB reading (an alpha channel needs a background; 16-bit and float modes need a scale)."""
    try:
        with Image.open(path) as im:
            mode, size, transparent = im.mode, im.size, "transparency" in im.info
    except OSError as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None
    if "A" in mode or "a" in mode or (mode == "P" and transparent):
        raise ValueError(
            f"{path} has an alpha channel (mode {mode}{' with transparency' * transparent}); "
            f"composite it onto a background first"
        )
    if mode not in TO_RGB:
        raise ValueError(f"{path} has mode {mode}, not 8-bit grey or colour; valid: {', '.join(TO_RGB)}")
    return mode, size


def image_headers(paths: list) -> list[tuple[str, tuple[int, int]]]:
    """``image_header`` of every path, read by a few threads: a folder is checked whole before any work."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(image_header, paths))


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's crop: halve with a box filter while the short side is ≥ 2·size, resize the short side to ``size``
    with bicubic, then take the central size×size square. Returns uint8 [size, size, 3] for an RGB image, [size,
    size] for a grey one. Convert the image first, as ADM does: a palette or CMYK image resizes differently."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size].copy()


class ImageFolder(Dataset):
    """Items (x float [3, size, size] in [-1, 1], label int) from ``root/<class>/<image>``, classes sorted. Every
    header is checked when the folder is opened; an image whose data turns out unreadable later gets label -1
    (``unreadable`` says why), so that the error reaches the main process whole from a loader worker."""

    def __init__(self, root: str | Path, size: int = 256):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset  # here: a 1.7 s import

        self.classes, class_to_idx = find_classes(str(root))
        self.samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
        if not self.samples:
            raise ValueError(f"{root} holds no images in class subfolders")
        image_headers([path for path, _ in self.samples])
        self.size = size
        self.shape = (3, size, size)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> np.ndarray:
        """uint8 [size, size, 3]; OSError when the file's data is corrupt or truncated."""
        with Image.open(self.samples[i][0]) as img:
            return center_crop_arr(img.convert("RGB"), self.size)

    def unreadable(self, i: int) -> ValueError:
        """The error to raise for item i, which got label -1: why it could not be read, from a second try."""
        try:
            self.load(i)
            why = "it read on a second try, so it changed while being read"
        except OSError as err:
            why = str(err)
        return ValueError(f"{self.samples[i][0]} is not a readable image ({why})")

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            arr = self.load(i)
        except OSError:
            return torch.zeros(self.shape), -1
        return torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1.0, self.samples[i][1]
