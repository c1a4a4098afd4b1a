"""Scoring during training (``train.py --eval-every N``): the EMA weights sampled and scored against a reference.

Every rank draws its share of the samples exactly as ``sample_ddp.py`` does (``sampling/generate.py``: sample i has
label i mod K and the noise of seed + i; batches of ``--eval-batch-size`` dealt round-robin), and passes each batch
through the feature extractor at once. Rank 0 gathers the features, folds them into a Gaussian in sample order, one
batch at a time, and takes the Fréchet distance to the reference: so the score is the one ``evaluate_fid.py`` gives
the ``.npz`` that ``sample_ddp.py`` writes at the same settings (``tests/test_eval_every.py``), for any number of
processes. A grid of the same samples, one row per class of a fixed list, is gathered too.

The evaluation draws from its own generators, samples under ``no_grad`` in eval mode and runs inside a forked
global RNG, so the training trajectory is the same bit for bit with and without it.
"""

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist

from data.vae import load_vae
from diffusion import create_diffusion
from diffusion.samplers import get_sampler
from evaluation.features import get_extractor
from evaluation.metrics import Gaussian, RunningGaussian, frechet_distance
from evaluation.pipeline import check_reference, extract, metric_names, resolve_device
from evaluation.sources import open_source
from sampling import image_grid
from sampling.generate import BatchSampler, batch_starts, guided_model, rank_starts
from training import dist

GRID_ROWS, GRID_COLUMNS = 10, 8  # classes in the grid (spread evenly over the labels), samples per class


def eval_defaults(args) -> None:
    """Fill the settings that depend on the data: on the embedded default (no --data-path) FD-fashion against the
    Fashion-MNIST test set; elsewhere FID with the Inception network, against an --eval-ref that must be given."""
    if not args.eval_every:
        return
    embedded = args.data_path is None
    if args.eval_extractor is None:
        args.eval_extractor = "fashion" if embedded else "inception"
    if args.eval_ref is None and embedded:
        args.eval_ref = "fashion-test"


def check_eval_flags(args, world_size: int) -> None:
    """The checks that need no files: one ValueError line each."""
    if args.eval_every < 0:
        raise ValueError(f"--eval-every must be >= 0, got {args.eval_every}")
    if not args.eval_every:
        return
    if args.eval_batch_size < 1 or args.eval_steps < 1:
        raise ValueError("--eval-batch-size and --eval-steps must be >= 1")
    fill = args.eval_batch_size * world_size
    if args.eval_samples < 2 or args.eval_samples % fill:
        raise ValueError(
            f"--eval-samples {args.eval_samples} does not fill whole batches across ranks: it must be a multiple "
            f"(>= 2) of --eval-batch-size {args.eval_batch_size} × {world_size} process(es) = {fill}"
        )
    if args.eval_ref is None:
        raise ValueError(
            "--eval-every on --data-path needs --eval-ref: the reference to score against (ADM's "
            "VIRTUAL_imagenet256_labeled.npz, or statistics from make_reference.py)"
        )


def grid_indices(num_samples: int, num_classes: int) -> np.ndarray:
    """The sample indices of the grid, [rows, columns]: up to 10 classes spread evenly over the labels (all of
    Fashion-MNIST's; 0, 100, …, 900 of ImageNet's), and up to 8 samples of each, the first ones of that class
    (sample i has label i mod K). A slot with no such sample is −1."""
    rows = min(GRID_ROWS, num_classes)
    classes = [k * num_classes // rows for k in range(rows)]
    columns = max(1, min(GRID_COLUMNS, num_samples // num_classes))
    index = np.array([[c + num_classes * j for j in range(columns)] for c in classes])
    return np.where(index < num_samples, index, -1)


@dataclass
class Evaluation:
    """One evaluation's result on rank 0 (other ranks get None): the metric, its value, the grid (uint8 HWC) and
    how long it took."""

    metric: str
    value: float
    grid: np.ndarray
    seconds: float
    notes: list[str]  # warnings on the way (a singular covariance, from fewer samples than feature dimensions)


class Evaluator:
    """Built once before training (every check and the reference statistics first); called at each evaluation."""

    def __init__(self, args, ctx: dist.Context, data, null_class: int | None):
        self.args, self.ctx = args, ctx
        if args.eval_cfg_scale != 1 and null_class is None:
            raise ValueError(
                f"--eval-cfg-scale {args.eval_cfg_scale} needs an unconditional class, and this model "
                "has none (--class-dropout 0); use --eval-cfg-scale 1"
            )
        self.null_class = null_class
        channels, size, _ = data.shape
        if args.eval_extractor == "fashion" and (data.decoder or channels != 1 or size not in (28, 32)):
            samples = "decoded latents" if data.decoder else list(data.shape)
            raise ValueError(
                f"--eval-extractor fashion scores grey 28×28 or 32×32 images, and this run's samples "
                f"are {samples}; use inception"
            )
        self.precision = args.eval_precision or ("bf16" if ctx.device.type == "cuda" else "fp32")
        self.spec = get_extractor(args.eval_extractor)
        self.metric = metric_names("fid", args.eval_extractor)[0]
        try:
            ref = open_source(args.eval_ref)
            check_reference(ref, args.eval_extractor, self.spec)
            if "pool" not in ref.stats and (ref.images is None or ref.images.count < 2):
                raise ValueError(f"{ref.path} holds neither pool statistics nor 2 or more images")
            weights = self.spec.find_weights(args.eval_weights)
        except ValueError as err:
            raise ValueError(f"--eval-every needs a reference it can score against: {err}") from None
        self.device = resolve_device(str(ctx.device))
        self.extractor = self.spec.build(weights).to(self.device).eval()
        flags = ("noise_schedule", "prediction", "learn_sigma", "diffusion_steps")  # as sample_ddp.py builds it
        self.diffusion = create_diffusion(**{k: getattr(args, k) for k in flags})
        self.sampler = get_sampler(args.eval_sampler)
        self.ts = self.sampler.timesteps(self.diffusion, args.eval_steps, sigma_max=80.0, rho=7.0)  # sample_ddp's
        self.vae = load_vae(data.decoder, ctx.device) if data.decoder else None
        self.data = data
        self.grid = grid_indices(args.eval_samples, data.num_classes)
        self.reference: Gaussian | None = None
        if ctx.is_main:  # only rank 0 scores
            self.reference = ref.stats.get("pool") or self._extract_reference(ref)

    def _extract_reference(self, ref) -> Gaussian:
        batch = self.args.eval_batch_size
        found = extract(self.extractor, ref, self.spec.dims, ["pool"], False, False, batch, self.device, "reference")
        return found.stats["pool"]

    def settings(self) -> str:
        a = self.args
        sampling = f"{a.eval_sampler}-{a.eval_steps}, cfg {a.eval_cfg_scale:g}, seed {a.eval_seed}, {self.precision}"
        return f"{self.metric} of {a.eval_samples} samples ({sampling}) against {a.eval_ref}"

    def __call__(self, ema: torch.nn.Module, step: int) -> Evaluation | None:
        """Sample ``ema`` (left in eval mode, untouched) on every rank and score on rank 0. Collective: every rank
        calls it at the same step."""
        tic = time.time()
        devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            features, grid = self._sample(ema)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value, grid = self._gather(features, grid)
        dist.barrier()
        if not self.ctx.is_main:
            return None
        notes = [str(w.message) for w in caught]
        return Evaluation(self.metric, value, image_grid(grid.numpy(), self.grid.shape[1]), time.time() - tic, notes)

    def _sample(self, ema: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's pool features [batches, B, D] and its part of the grid (zeros where another rank drew)."""
        a, ctx = self.args, self.ctx
        guided = guided_model(
            ema, ctx.device, self.precision, a.eval_cfg_scale, self.null_class, None, None, self.diffusion
        )
        draw = BatchSampler(
            guided,
            self.sampler,
            self.ts,
            self.diffusion,
            self.data.shape,
            self.data.num_classes,
            self.data.transform.invert,
            self.vae,
            a.eval_seed,
            ctx.device,
        )
        B = a.eval_batch_size
        features, grid = [], None
        for start in rank_starts(batch_starts(a.eval_samples, B), ctx.rank, ctx.world_size):
            images, _ = draw(start, start + B)
            features.append(self.extractor(torch.tensor(images, device=self.device))["pool"])
            if grid is None:
                grid = torch.zeros(self.grid.size, *images.shape[1:], dtype=torch.uint8)
            slots = np.flatnonzero((self.grid.ravel() >= start) & (self.grid.ravel() < start + B))
            grid[slots] = torch.from_numpy(images[self.grid.ravel()[slots] - start])
        return torch.stack(features), grid

    def _gather(self, features: torch.Tensor, grid: torch.Tensor) -> tuple[float | None, torch.Tensor]:
        """Rank 0: the Fréchet distance of all ranks' features, folded in sample order; the whole grid."""
        world = self.ctx.world_size
        if world > 1:
            comm = self.ctx.device  # nccl moves CUDA tensors, gloo CPU ones
            parts = [torch.empty_like(features, device=comm) for _ in range(world)]
            torch_dist.all_gather(parts, features.to(comm))
            merged = grid.to(comm)
            torch_dist.all_reduce(merged)  # each slot is drawn by one rank, zeros elsewhere
            grid = merged.cpu()
        else:
            parts = [features]
        if not self.ctx.is_main:
            return None, grid
        running = RunningGaussian(self.spec.dims["pool"], self.device)
        for j in range(len(features)):  # global batch j·W + r is rank r's j-th: ascending order of samples
            for part in parts:
                running.update(part[j].to(self.device))
        names = ("samples' pool", "reference's pool")
        return frechet_distance(running.gaussian(), self.reference, names), grid


def write_grid(image: np.ndarray, path: Path) -> None:
    """The grid as a PNG, atomically."""
    from PIL import Image

    from training.atomic import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format="PNG")
