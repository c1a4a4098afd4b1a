"""The embedded default data set: Fashion-MNIST (Xiao et al. 2017), 70K 28×28 gray images in 10 classes.

Read from the Debian package ``dataset-fashion-mnist`` (IDX files found with ``dpkg -L``); when it is absent,
torchvision downloads the same files. Images are padded to 32×32 with black and scaled to [-1, 1].
"""

import gzip
import subprocess
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DOWNLOAD_ROOT = Path.home() / ".cache" / "minsnr-dit"


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): 2 zero bytes, a type byte (0x08 = uint8), ndim, big-endian dims."""
    raw = (gzip.open if str(path).endswith(".gz") else open)(path, "rb").read()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _debian_dir() -> Path | None:
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return None
    return next((Path(p).parent for p in listing.split() if p.endswith(_FILES["train"][0])), None)


def load_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) for ``split`` in {"train" (60K), "test" (10K)}."""
    images, labels = _FILES[split]
    folder = _debian_dir()
    if folder is None:
        import torchvision

        try:
            torchvision.datasets.FashionMNIST(DOWNLOAD_ROOT, train=split == "train", download=True)
        except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
            raise FileNotFoundError(
                f"Fashion-MNIST not found: install the Debian package (apt-get install dataset-fashion-mnist) "
                f"or go online for torchvision's download ({err})"
            ) from err
        folder = DOWNLOAD_ROOT / "FashionMNIST" / "raw"
    return read_idx(folder / images), read_idx(folder / labels).astype(np.int64)


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] -> [N, 32, 32]: each image centred on a black canvas, as the models and evaluator see it."""
    padded = np.zeros((len(images), 32, 32), dtype=np.uint8)
    padded[:, 2:30, 2:30] = images
    return padded


class FashionMNIST(Dataset):
    """Items (x [1, 32, 32] float in [-1, 1], label int): the 28×28 image centred on a black 32×32 canvas."""

    num_classes = 10
    shape = (1, 32, 32)

    def __init__(self, split: str = "train"):
        images, self.labels = load_arrays(split)
        self.images = torch.from_numpy(pad_to_32(images)).unsqueeze(1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i].float() / 127.5 - 1.0, int(self.labels[i])
