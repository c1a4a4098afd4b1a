"""The data transform: the map from the data's units to the model's space, x0 = apply(z), and back, z = invert(x0).

Data units are pixels in [−1, 1] or unscaled VAE latents. Training applies the transform to every batch
(``TrainingData.prepare``); every checkpoint records it (:func:`transform_record`) and sampling rebuilds it
(:func:`read_transform`) to invert it before decoding or quantising. Two kinds exist: ``Scale`` (the SD latent
scale 0.18215, or 1 in pixel space) and the per-channel ``Normalization`` of ``--data-norm channel``.
"""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .normalization import Normalization


@dataclass(frozen=True)
class Scale:
    """x0 = factor·z."""

    name: ClassVar[str] = "scale"
    factor: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.factor) and self.factor > 0):
            raise ValueError(f"the data scale must be finite and > 0, got {self.factor}")

    def apply(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.factor

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.factor

    def record(self) -> dict:
        return {"factor": self.factor}

    @classmethod
    def from_record(cls, record, channels: int, where: str) -> "Scale":
        """Read :meth:`record`; one ValueError line names ``where`` when it is missing or bad (``channels`` is
        unused: one factor serves every channel)."""
        try:
            return cls(float(record["factor"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where}: bad data scale ({err})") from None


DataTransform = Scale | Normalization
TRANSFORMS = {cls.name: cls for cls in (Scale, Normalization)}  # the name a checkpoint records -> the class


def transform_record(transform: DataTransform) -> dict:
    """``{"name": ..., **parameters}``, what a checkpoint holds under ``data_transform``."""
    return {"name": transform.name, **transform.record()}


def read_transform(record, channels: int, where: str) -> DataTransform:
    """The transform :func:`transform_record` wrote, for data of ``channels`` channels; one ValueError line naming
    ``where`` for an unknown kind or bad parameters."""
    name = record.get("name") if isinstance(record, dict) else None
    if name not in TRANSFORMS:
        raise ValueError(f"{where}: unknown data transform {name!r}; known: {', '.join(TRANSFORMS)}")
    return TRANSFORMS[name].from_record(record, channels, where)
