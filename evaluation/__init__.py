"""ADM-protocol evaluation: FID, sFID, Inception Score and precision/recall of a sample batch against a reference.

``evaluate(ref, sample, ...)`` runs one evaluation (``evaluate_fid.py`` is its command line); ``metrics`` holds
the arithmetic, ``features`` the extractor registry, ``sources`` and ``images`` the readers of REF and SAMPLE.
"""

from .features import EXTRACTORS, Extractor, get_extractor
from .metrics import Gaussian, InceptionScore, RunningGaussian, frechet_distance, precision_recall
from .pipeline import evaluate, metric_names, save_reference
from .sources import open_source, save_statistics

__all__ = [
    "EXTRACTORS",
    "Extractor",
    "Gaussian",
    "InceptionScore",
    "RunningGaussian",
    "evaluate",
    "frechet_distance",
    "get_extractor",
    "metric_names",
    "open_source",
    "precision_recall",
    "save_reference",
    "save_statistics",
]
