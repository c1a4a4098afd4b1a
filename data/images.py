"""ImageNet-style image folders with ADM's center crop (the preprocessing behind every ImageNet FID table)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's crop: halve with a box filter while the short side is ≥ 2·size, resize the short side to ``size``
    with bicubic, then take the central size×size square. Returns uint8 [size, size, 3]."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"))
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size].copy()


class ImageFolder(Dataset):
    """Items (x float [3, size, size] in [-1, 1], label int) from ``root/<class>/<image>``, classes sorted."""

    def __init__(self, root: str | Path, size: int = 256):
        self.classes, class_to_idx = find_classes(str(root))
        self.samples = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS)
        if not self.samples:
            raise ValueError(f"{root} holds no images in class subfolders")
        self.size = size
        self.shape = (3, size, size)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            arr = center_crop_arr(img.convert("RGB"), self.size)
        return torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1.0, label
