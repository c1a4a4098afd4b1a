"""Per-channel data normalisation: x0 = (z − mean_c)/std_c, computed once over the training set.

Training data is either pixels in [−1, 1] or SD-VAE latents z. The paper's setting for latents is a single scale,
x0 = 0.18215·z; `--data-norm channel` instead standardises every channel by its mean and std over the training set
(what LightningDiT found to matter, its issue #34). The statistics travel with the data (the latent manifest, or
computed when pixel data is opened) and with every checkpoint, and sampling inverts them before decoding or
quantising, so a checkpoint made with normalisation cannot be sampled without its statistics.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

NORMALIZATIONS = ("none", "channel")


@dataclass(frozen=True)
class Normalization:
    """x0 = (z − mean)/std per channel; ``invert`` maps a sample back to the data's own units."""

    name: ClassVar[str] = "channel"  # its name as a data transform (data/transform.py)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(
                f"normalisation statistics need one mean and one std per channel, got "
                f"{len(self.mean)} means and {len(self.std)} stds"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) <= 0:
            raise ValueError(
                f"normalisation statistics must be finite with std > 0, got mean {list(self.mean)} std {list(self.std)}"
            )

    @property
    def channels(self) -> int:
        return len(self.mean)

    def _shaped(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim < 2 or x.shape[1] != self.channels:
            raise ValueError(f"normalisation of {self.channels} channels applied to a tensor of shape {list(x.shape)}")
        shape = (1, self.channels) + (1,) * (x.ndim - 2)
        mean = torch.tensor(self.mean, dtype=torch.float64).reshape(shape).to(x.device, x.dtype)
        std = torch.tensor(self.std, dtype=torch.float64).reshape(shape).to(x.device, x.dtype)
        return mean, std

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        """Data [B, C, ...] -> normalised x0."""
        mean, std = self._shaped(z)
        return (z - mean) / std

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised x0 [B, C, ...] -> data units."""
        mean, std = self._shaped(x)
        return x * std + mean

    def record(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_record(cls, record, channels: int, where: str) -> "Normalization":
        """Read statistics saved by :meth:`record` (a manifest or a checkpoint); one ValueError line names
        ``where`` when they are missing, malformed, non-finite or of another channel count than ``channels``."""
        try:
            norm = cls(tuple(float(v) for v in record["mean"]), tuple(float(v) for v in record["std"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: bad normalisation statistics ({err})") from None
        if norm.channels != channels:
            raise ValueError(f"{where}: normalisation statistics have {norm.channels} channels, the data {channels}")
        return norm


def _from_moments(parts) -> Normalization:
    """Per-channel mean and std from an iterable of (values [C, N], second moments [C, N]) in float64:
    mean = ΣE[x]/N, std = √(ΣE[x²]/N − mean²)."""
    total = sq = 0.0
    count = 0
    for values, squares in parts:
        total, sq, count = total + values.sum(1), sq + squares.sum(1), count + values.shape[1]
    if count == 0:
        raise ValueError("no data to compute normalisation statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 0))
    return Normalization(tuple(mean.tolist()), tuple(std.tolist()))


def _flat_channels(x: np.ndarray, axis: int) -> np.ndarray:
    """Channel ``axis`` first, everything else flattened: [C, N]."""
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def channel_stats(batches) -> Normalization:
    """Mean and std (population) per channel over an iterable of [B, C, ...] batches, accumulated in float64."""
    flat = (_flat_channels(torch.as_tensor(x).double().numpy(), 1) for x in batches)
    return _from_moments((x, x**2) for x in flat)


def latent_channel_stats(shards) -> Normalization:
    """Per-channel mean and std of the latents that training draws, z = μ + σ·ε with a fair-coin flip, from
    moment shards [n, 2 (flip), 2 (μ, σ), C, h, w]: E[z] = E[μ] and E[z²] = E[μ²] + E[σ²], over both flips."""

    def parts():
        for moments in shards:
            m = np.asarray(moments, dtype=np.float64)
            mu, sigma = _flat_channels(m[:, :, 0], 2), _flat_channels(m[:, :, 1], 2)  # [C, n·2·h·w]
            yield mu, mu**2 + sigma**2

    return _from_moments(parts())
