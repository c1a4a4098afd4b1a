"""Image inputs, read as uint8 NHWC batches: an .npz's ``arr_0`` streamed from the zip, or a folder of PNG/JPEG files.

Both check everything (dtype, layout, sizes, truncation) when opened, before any batch is read.
"""

import math
import os
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from data.images import center_crop_arr, image_headers

SUFFIXES = (".png", ".jpg", ".jpeg")


def check_layout(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Raise one clear ValueError unless the array is uint8 NHWC [N, H, W, C] with C = 1 or 3."""
    if dtype.hasobject:
        raise ValueError(f"{name} holds Python objects, which only unpickling could read; pickled data is never loaded")
    if dtype != np.uint8:
        raise ValueError(f"{name} is {dtype}, expected uint8 images (quantise with clamp(127.5·x + 128, 0, 255))")
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        raise ValueError(
            f"{name} has shape {list(shape)}, which is NCHW; expected NHWC [N, H, W, C]: "
            f"transpose it with .transpose(0, 2, 3, 1)"
        )
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise ValueError(f"{name} has shape {list(shape)}; expected NHWC [N, H, W, C] with C = 1 or 3")


def _read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an open .npy stream, leaving it at the first data byte."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    version = np.lib.format.read_magic(f)
    if version not in readers:
        raise ValueError(f".npy format version {version} is not supported")
    return readers[version](f)


class NpzImages:
    """``arr_0`` of an .npz, read batch by batch from its zip member so that it never sits in memory whole
    (``np.load`` would read all of it). A Fortran-ordered array is the exception: it is read whole."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with zipfile.ZipFile(path) as z, z.open("arr_0.npy") as f:
                shape, self.fortran, dtype = _read_npy_header(f)
                stored = z.getinfo("arr_0.npy").file_size - f.tell()
        except (ValueError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{path}: arr_0 is not a readable .npy array, truncated or corrupt ({err})") from None
        check_layout(shape, dtype, f"{path}: arr_0")
        if stored < math.prod(shape):
            raise ValueError(
                f"{path}: arr_0 holds {stored} bytes, fewer than its shape {list(shape)} needs: "
                f"it is truncated or still being written"
            )
        self.count, self.shape = shape[0], tuple(shape[1:])

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """uint8 [≤size, H, W, C] arrays, in order."""
        if self.fortran:
            images = np.load(self.path, allow_pickle=False)["arr_0"]
            for start in range(0, self.count, size):
                yield np.ascontiguousarray(images[start : start + size])
            return
        try:
            with zipfile.ZipFile(self.path) as z, z.open("arr_0.npy") as f:
                _read_npy_header(f)
                for start in range(0, self.count, size):
                    n = min(size, self.count - start)
                    yield np.frombuffer(f.read(n * math.prod(self.shape)), np.uint8).reshape(n, *self.shape)
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"{self.path} is truncated or corrupt ({err})") from None


class FolderImages:
    """PNG/JPEG files anywhere under ``root``, sorted by path, all of one size, or of any sizes when ``crop`` is
    given: then each is cut to crop×crop by ADM's centre crop (``data.images.center_crop_arr``). Grey [.., 1] when
    every image is grey (mode L), else RGB [.., 3] (``data.images.image_header`` says which modes are read). Other
    files are skipped. Decoded a batch at a time by a few threads."""

    def __init__(self, root: Path, crop: int | None = None):
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        if not self.paths:
            raise ValueError(f"{root} holds no PNG or JPEG images")
        headers = image_headers(self.paths)
        modes = {mode for mode, _ in headers}
        first_of_size = {}
        for path, (_, size) in zip(self.paths, headers, strict=True):
            first_of_size.setdefault(size, path)
        if len(first_of_size) > 1 and crop is None:
            (a, pa), (b, pb) = list(first_of_size.items())[:2]
            raise ValueError(
                f"{root} mixes image sizes: {a[0]}×{a[1]} ({pa}) and {b[0]}×{b[1]} ({pb}); all "
                f"images must have one size (make_reference.py crops a folder like ImageNet)"
            )
        self.mode = "L" if modes == {"L"} else "RGB"
        if len(modes) > 1:
            names = ", ".join(sorted(modes))
            warnings.warn(f"{root} mixes image modes {names}; every image is read as RGB", stacklevel=2)
        ((width, height),) = first_of_size if crop is None else {(crop, crop)}
        self.crop, self.count, self.shape = crop, len(self.paths), (height, width, 1 if self.mode == "L" else 3)

    def _read(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                image = im.convert(self.mode)
            return np.asarray(image) if self.crop is None else center_crop_arr(image, self.crop)
        except OSError as err:
            raise ValueError(f"{path} is not a readable image ({err})") from None

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """uint8 [≤size, H, W, C] arrays, in path order."""
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, self.count, size):
                images = list(pool.map(self._read, self.paths[start : start + size]))
                yield np.stack(images).reshape(len(images), *self.shape)
