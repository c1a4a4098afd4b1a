"""One evaluation: check both inputs, extract features in one pass over each, compute the requested metrics.

Everything that can be checked (names, files, layouts, sizes, statistics' dimensions) is checked before the
extractor is built, and each problem is one ValueError line.
"""

import hashlib
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .features import Extractor, get_extractor
from .images import FolderImages
from .metrics import Gaussian, InceptionScore, RunningGaussian, frechet_distance, precision_recall
from .sources import Source, open_source, save_statistics

NEEDS = {"fid": "pool", "sfid": "spatial", "is": "logits", "pr": "pool"}  # metric -> the feature it is computed on
FD_METRICS = ("fid", "sfid")
IS_SPLIT = 5000
PR_NEIGHBOURS = 3
STANDARD = "inception"  # the extractor whose metrics carry the standard names
RENAMED = {"fid": "fd", "sfid": "sfd"}  # for other extractors


def metric_names(metric: str, extractor: str) -> list[str]:
    """The reported names of a metric: fid, sfid, is, [precision, recall] for Inception; fd_X, sfd_X, is_X,
    [precision_X, recall_X] for another extractor X, so that a distance in another feature space is never FID."""
    base = ["precision", "recall"] if metric == "pr" else [metric]
    if extractor == STANDARD:
        return base
    return [f"{RENAMED.get(name, name)}_{extractor}" for name in base]


def parse_metrics(metrics: str | Sequence[str] | None, extractor: str, spec: Extractor) -> list[str]:
    """Comma-separated (or listed) names from fid, sfid, is, pr; None: all that the extractor's features allow."""
    if metrics is None:
        return [m for m in NEEDS if NEEDS[m] in spec.dims]
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    for m in names:
        if m not in NEEDS:
            raise ValueError(f"unknown metric '{m}'; valid: {', '.join(NEEDS)}")
        if NEEDS[m] not in spec.dims:
            raise ValueError(f"metric '{m}' needs {NEEDS[m]} features, which extractor '{extractor}' does not give")
    return [m for m in NEEDS if m in names]


def resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name} is not a device name (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there is no such CUDA device ({torch.cuda.device_count()} available)")
    return device


@dataclass
class Features:
    """What one pass over a set of images leaves: Gaussians by feature kind, pool features, the Inception Score."""

    stats: dict[str, Gaussian]
    pool: torch.Tensor | None
    inception_score: float | None


@torch.inference_mode()
def extract(
    model: torch.nn.Module,
    source: Source,
    dims: dict[str, int],
    kinds: Sequence[str],
    keep_pool: bool,
    score: bool,
    batch_size: int,
    device: torch.device,
    desc: str,
) -> Features:
    """Stream ``source``'s images through ``model``, accumulating float64 Gaussians of ``kinds``, keeping the pool
    features (float32, on the CPU: 400 MB for 50K × 2048) when ``keep_pool``, and the IS of the logits if ``score``."""
    running = {kind: RunningGaussian(dims[kind], device) for kind in kinds}
    inception_score = InceptionScore(IS_SPLIT) if score else None
    pool = []
    images = source.images
    for batch in tqdm(
        images.batches(batch_size), total=math.ceil(images.count / batch_size), desc=desc, disable=None, leave=False
    ):
        out = model(torch.tensor(batch, device=device))
        for kind, acc in running.items():
            acc.update(out[kind])
        if score:
            inception_score.update(out["logits"])
        if keep_pool:
            pool.append(out["pool"].float().cpu())
    return Features(
        {kind: acc.gaussian() for kind, acc in running.items()},
        torch.cat(pool) if keep_pool else None,
        inception_score.score() if score else None,
    )


def check_reference(ref: Source, extractor: str, spec: Extractor) -> None:
    """Stored statistics and features must be the chosen extractor's, with its dimensions."""
    if (ref.stats or ref.features is not None) and ref.extractor != extractor:
        raise ValueError(f"REF {ref.path} holds {ref.extractor} statistics, but the feature extractor is {extractor}")
    for kind, g in ref.stats.items():
        d = spec.dims[kind]
        if g.mu.shape != (d,) or g.sigma.shape != (d, d):
            shapes = f"{list(g.mu.shape)} and {list(g.sigma.shape)}"
            raise ValueError(
                f"REF {ref.path}: {kind} statistics of shapes {shapes}, but {extractor}'s {kind} features "
                f"have {d} dimensions"
            )
    if ref.features is not None and (ref.features.ndim != 2 or ref.features.shape[1] != spec.dims["pool"]):
        raise ValueError(
            f"REF {ref.path}: features have shape {list(ref.features.shape)}, but {extractor}'s pool "
            f"features have {spec.dims['pool']} dimensions"
        )


def _check_count(n: int, needed: int, what: str, why: str) -> None:
    if n < needed:
        raise ValueError(f"{what} holds {n} image{'s' * (n != 1)}; {why} needs at least {needed}")


def evaluate(
    ref: str | Path,
    sample: str | Path,
    metrics: str | Sequence[str] | None = None,
    extractor: str = "inception",
    weights: str | None = None,
    batch_size: int = 100,
    device: str | None = None,
    save_ref_stats: str | Path | None = None,
) -> dict:
    """Evaluate SAMPLE against REF (ADM's order and definitions; see README). Returns
    ``{"metrics": {name: value}, "sample": {...}, "reference": {...}, "settings": {...}}``.

    REF's stored statistics, when it has them, are used for the Fréchet distances (ADM's rule), its images for
    what is missing and for precision/recall; the sample's statistics are always computed from its images.
    """
    spec = get_extractor(extractor)
    chosen = parse_metrics(metrics, extractor, spec)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    sample_src = open_source(sample)
    if sample_src.images is None:
        raise ValueError(f"SAMPLE {sample_src.path} holds no images (arr_0); a sample must be images")
    ref_src = open_source(ref)
    check_reference(ref_src, extractor, spec)

    fd_kinds = [NEEDS[m] for m in chosen if m in FD_METRICS]
    pr = "pr" in chosen
    ref_kinds = [kind for kind in fd_kinds if kind not in ref_src.stats]
    ref_pool = pr and ref_src.features is None
    if (ref_kinds or ref_pool) and ref_src.images is None:
        missing = " or ".join([*(f"{k} statistics" for k in ref_kinds), *(["pool features"] if ref_pool else [])])
        raise ValueError(f"REF {ref_src.path} holds neither images nor the {missing} that {', '.join(chosen)} need")
    _check_count(sample_src.images.count, 2, f"SAMPLE {sample_src.path}", "a covariance")
    if ref_kinds:
        _check_count(ref_src.images.count, 2, f"REF {ref_src.path}", "a covariance")
    if pr:
        _check_count(sample_src.images.count, PR_NEIGHBOURS + 1, f"SAMPLE {sample_src.path}", "precision/recall")
        ref_n = ref_src.images.count if ref_pool else len(ref_src.features)
        _check_count(ref_n, PR_NEIGHBOURS + 1, f"REF {ref_src.path}", "precision/recall")
    if save_ref_stats is not None:
        out = Path(save_ref_stats)
        if ref_src.images is None or ref_src.stats or ref_src.features is not None:
            raise ValueError(
                f"--save-ref-stats saves statistics computed from REF's images, but REF {ref_src.path} "
                f"holds stored statistics"
            )
        if out.suffix != ".npz" or not out.parent.is_dir():
            raise ValueError(f"--save-ref-stats {out} must be an .npz path in an existing directory")

    weights_path = spec.find_weights(weights)
    sha256 = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    model = spec.build(weights_path).to(dev).eval()

    ref_stats, ref_features, ref_count = dict(ref_src.stats), ref_src.features, None
    if ref_kinds or ref_pool:
        computed = extract(model, ref_src, spec.dims, ref_kinds, ref_pool, False, batch_size, dev, "reference")
        ref_stats.update(computed.stats)
        ref_features = computed.pool if ref_pool else ref_features
        ref_count = ref_src.images.count
    sample_features = extract(model, sample_src, spec.dims, fd_kinds, pr, "is" in chosen, batch_size, dev, "sample")

    values = {}
    for m in chosen:
        if m in FD_METRICS:
            kind = NEEDS[m]
            names = (f"sample's {kind}", f"reference's {kind}")
            value = [frechet_distance(sample_features.stats[kind], ref_stats[kind], names)]
        elif m == "is":
            value = [sample_features.inception_score]
        else:
            value = precision_recall(torch.as_tensor(ref_features), sample_features.pool, PR_NEIGHBOURS, device=dev)
        values.update(zip(metric_names(m, extractor), value, strict=True))

    if save_ref_stats is not None:
        features = None if ref_features is None else np.asarray(ref_features, dtype=np.float32)
        save_statistics(save_ref_stats, extractor, ref_stats, features, ref_count, sha256)
    stored = [kind for kind in fd_kinds if kind in ref_src.stats]
    return {
        "metrics": values,
        "sample": {"path": str(sample_src.path), "count": sample_src.images.count},
        "reference": {
            "path": str(ref_src.path),
            "count": ref_count if ref_count is not None else next((g.count for g in ref_src.stats.values()), None),
            "statistics": ("stored" if stored else "computed") if fd_kinds else None,
        },
        "settings": {
            "metrics": chosen,
            "feature_extractor": extractor,
            "weights": str(weights_path),
            "weights_sha256": sha256,
            "batch_size": batch_size,
            "device": str(dev),
            "is_split_size": IS_SPLIT,
            "pr_neighbours": PR_NEIGHBOURS,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torch_fidelity": version("torch-fidelity"),
                "numpy": np.__version__,
            },
        },
    }


def save_reference(
    folder: str | Path,
    out: str | Path,
    size: int,
    extractor: str = "inception",
    weights: str | None = None,
    batch_size: int = 100,
    device: str | None = None,
    keep_features: bool = False,
) -> int:
    """Write the statistics of every Fréchet distance the extractor gives (and, with ``keep_features``, the pool
    features that precision/recall need) over the images anywhere under ``folder``, each cut to size×size by ADM's
    centre crop, to ``out``: a statistics file that serves as REF. Everything is checked before the extractor is
    built; returns the number of images."""
    spec = get_extractor(extractor)
    folder, out = Path(folder), Path(out)
    if size < 1 or batch_size < 1:
        raise ValueError(f"--image-size and --batch-size must be >= 1, got {size} and {batch_size}")
    if out.suffix != ".npz" or not out.parent.is_dir():
        raise ValueError(f"{out} must be an .npz path in an existing directory")
    if not folder.is_dir():
        raise ValueError(f"{folder} does not exist or is not a directory")
    images = FolderImages(folder, crop=size)
    _check_count(images.count, 2, str(folder), "a covariance")
    dev = resolve_device(device)
    weights_path = spec.find_weights(weights)
    sha256 = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    model = spec.build(weights_path).to(dev).eval()
    kinds = [NEEDS[m] for m in FD_METRICS if NEEDS[m] in spec.dims]
    found = extract(model, Source(folder, images), spec.dims, kinds, keep_features, False, batch_size, dev, "images")
    features = None if found.pool is None else found.pool.numpy().astype(np.float32)
    save_statistics(out, extractor, found.stats, features, images.count, sha256)
    return images.count
