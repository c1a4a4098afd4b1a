"""Drawing samples batch by batch: the guided network, the batches each rank draws, and one batch to uint8 images.

``sample_ddp.py`` and the in-training evaluation (``training/scoring.py``) both draw through these functions,
so at the same settings a batch is the same images in either: sample i has label i mod K and the noise of
``PerSampleNoise(seed + i)``, and batches of B samples are dealt to ranks round-robin.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from diffusion import classifier_free_guidance, timestep_interval_sigmas
from diffusion.gaussian_diffusion import GaussianDiffusion
from training import precision as precisions

from .output import PerSampleNoise, class_labels, quantize


def guided_model(
    model,
    device: torch.device,
    precision: str,
    cfg_scale: float,
    null_class: int | None,
    cfg_channels: int | None,
    interval,
    diffusion: GaussianDiffusion,
) -> Callable:
    """The network as the samplers call it: under ``precision``'s autocast, output in fp32, with classifier-free
    guidance at ``cfg_scale`` (on the first ``cfg_channels``; only within ``interval`` = (lo, hi, "sigma" | "t"),
    if given)."""

    def net(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with precisions.autocast(device, precision):
            return model(x, t, y).float()

    if interval is not None:
        lo, hi, kind = interval
        interval = timestep_interval_sigmas(lo, hi, diffusion) if kind == "t" else (lo, hi)
    return classifier_free_guidance(net, cfg_scale, null_class, cfg_channels, interval, diffusion)


def batch_starts(num_samples: int, batch: int) -> list[int]:
    """The first sample index of every batch of ``batch`` samples (the last one may be short)."""
    return list(range(0, num_samples, batch))


def rank_starts(starts: list[int], rank: int, world_size: int) -> list[int]:
    """The batches rank ``rank`` draws: every ``world_size``-th, round-robin from its own index."""
    return starts[rank::world_size]


@dataclass
class BatchSampler:
    """What turns a range of sample indices into images: the guided network, a sampler over the level list
    ``ts``, the diffusion, the sample shape [C, H, W] and class count, the inverse data transform and a decoder
    (None in pixel space), and the base seed."""

    guided: Callable
    sampler: Callable
    ts: list[int]
    diffusion: GaussianDiffusion
    shape: tuple[int, int, int]
    num_classes: int
    to_data: Callable[[torch.Tensor], torch.Tensor]
    vae: object | None
    seed: int
    device: torch.device

    @torch.no_grad()
    def __call__(self, start: int, stop: int) -> tuple[np.ndarray, torch.Tensor]:
        """Samples start … stop−1 as uint8 NHWC images, and their labels."""
        noise = PerSampleNoise(self.seed, start, stop)
        x = noise(torch.empty(stop - start, *self.shape, device=self.device))
        y = class_labels(start, stop, self.num_classes).to(self.device)
        x = self.sampler(self.guided, x, self.ts, self.diffusion, {"y": y}, noise_fn=noise)
        x = self.to_data(x)  # undo the training normalisation (or the latent scale factor)
        if self.vae is not None:
            x = self.vae.decode(x).sample
        return quantize(x), y
