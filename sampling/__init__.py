"""Sampling to ADM ``.npz``: loading any supported checkpoint, and the per-sample bookkeeping of sample_ddp.py."""

from .output import (
    PerSampleNoise,
    assemble_npz,
    class_labels,
    image_grid,
    quantize,
    read_shard,
    shard_path,
    write_shard,
)
from .source import SamplingSpec, load_for_sampling

__all__ = [
    "PerSampleNoise",
    "SamplingSpec",
    "assemble_npz",
    "class_labels",
    "image_grid",
    "load_for_sampling",
    "quantize",
    "read_shard",
    "shard_path",
    "write_shard",
]
