"""What a REF or SAMPLE path holds: images, statistics stored with them, or a statistics file this tool wrote.

- a folder of PNG/JPEG images;
- an .npz with images in ``arr_0`` (a sample batch);
- ADM's reference batch (``VIRTUAL_imagenet256_labeled.npz``): ``arr_0`` plus Inception statistics ``mu``,
  ``sigma`` (pool_3) and ``mu_s``, ``sigma_s`` (spatial);
- a statistics file (``save_statistics``): the same keys, plus ``feature_extractor`` (which features they are),
  ``count`` (how many images), ``weights_sha256``, and ``features`` (the pool features, float32 [N, D], when
  precision/recall ran), so that it can serve as REF without images.

Arrays are read with ``allow_pickle=False``: nothing that needs pickled code is ever loaded.
"""

import glob
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.atomic import atomic_write

from . import fashion
from .images import FolderImages, NpzImages
from .metrics import Gaussian

STAT_KEYS = {"pool": ("mu", "sigma"), "spatial": ("mu_s", "sigma_s")}  # feature kind -> (mean, covariance) keys
MARKER = "feature_extractor"


@dataclass
class Source:
    """Images to stream (or None), statistics by feature kind, stored pool features, and whose features they are."""

    path: Path
    images: NpzImages | FolderImages | None
    stats: dict[str, Gaussian] = field(default_factory=dict)
    features: np.ndarray | None = None
    extractor: str | None = None


def _check_exists(path: Path) -> None:
    """A missing file is an error; say so differently when a sampler's temporary file for it is beside it."""
    if path.exists():
        return
    name = glob.escape(path.name)
    partial = sorted(path.parent.glob(f".{name}.*")) + sorted(path.parent.glob(f"{name}.tmp*"))
    if partial:
        raise ValueError(f"{path} does not exist yet: {partial[0].name} beside it is still being written")
    raise ValueError(f"{path} does not exist")


def _load(npz, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(
                f"{path}: '{key}' is an object array, which needs pickled code to load; pickled data is never loaded"
            ) from None
        raise ValueError(f"{path}: cannot read '{key}' ({err})") from None


def open_source(path: str | Path) -> Source:
    """Open and check a REF or SAMPLE path (see the module docstring); one clear ValueError for anything bad.
    The name ``fashion-test`` stands for the Fashion-MNIST test split (``evaluation.fashion.reference_npz``)."""
    path = fashion.reference_npz() if str(path) == fashion.REFERENCE else Path(path)
    _check_exists(path)
    if path.is_dir():
        return Source(path, FolderImages(path))
    if path.suffix != ".npz":
        raise ValueError(f"{path} is neither an .npz file nor a folder of images")
    try:
        with zipfile.ZipFile(path) as z:
            keys = [name.removesuffix(".npy") for name in z.namelist()]
    except (zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"{path} is not a complete .npz: still being written, or truncated ({err})") from None
    images = NpzImages(path) if "arr_0" in keys else None
    with np.load(path, allow_pickle=False) as npz:
        if MARKER in keys:
            extractor = str(_load(npz, path, MARKER))
            count = int(_load(npz, path, "count")) if "count" in keys else None
        elif "mu" in keys:
            extractor, count = "inception", None  # ADM's reference batch: statistics over all of ImageNet
        elif images is None:
            raise ValueError(f"{path} holds neither images (arr_0) nor statistics (mu, sigma); its keys: {keys}")
        else:
            extractor, count = None, None
        stats = {
            kind: Gaussian(_load(npz, path, mu).astype(np.float64), _load(npz, path, sigma).astype(np.float64), count)
            for kind, (mu, sigma) in STAT_KEYS.items()
            if mu in keys and sigma in keys
        }
        features = _load(npz, path, "features") if "features" in keys else None
    for kind, g in stats.items():
        if not (np.isfinite(g.mu).all() and np.isfinite(g.sigma).all()):
            raise ValueError(f"{path}: its {kind} statistics ({', '.join(STAT_KEYS[kind])}) hold NaN or inf")
    if features is not None and not np.isfinite(features).all():
        raise ValueError(f"{path}: its stored features hold NaN or inf")
    return Source(path, images, stats, features, extractor)


def save_statistics(
    path: str | Path,
    extractor: str,
    stats: dict[str, Gaussian],
    features: np.ndarray | None,
    count: int | None,
    weights_sha256: str,
) -> None:
    """Write a statistics file (module docstring) atomically: a temporary file beside it, then a rename. ``count``
    is the number of images behind ``stats`` (None: unknown, as for ADM's statistics; then no ``count`` key)."""
    path = Path(path)
    arrays = {MARKER: np.array(extractor), "weights_sha256": np.array(weights_sha256)}
    if count is not None:
        arrays["count"] = np.array(count)
    for kind, g in stats.items():
        arrays[STAT_KEYS[kind][0]], arrays[STAT_KEYS[kind][1]] = g.mu, g.sigma
    if features is not None:
        arrays["features"] = features
    with atomic_write(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)
