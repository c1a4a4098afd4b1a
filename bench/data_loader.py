"""Latent-loader throughput: shards on disk -> moments batch -> flip + posterior draw, against what a step consumes.

    python bench/data_loader.py --images 8192 --batch 32 --workers 2 --demand 3.3

It writes --images random moments (float16 [2 flips, (mean, std), 4, 32, 32], ImageNet-256's latent shape) as
shards in a temporary directory, reads them back through train.py's path (LatentShards, ResumableSampler,
DataLoader with pinned memory on CUDA, then draw_latents) and reports images per second. --demand is the training
step's consumption in images/s (from bench/train_step.py); the ratio is what the issue's 10× target reads.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from data.latents import LatentShards, draw_latents, shard_name, write_manifest, write_shard
from data.order import ResumableSampler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8192)
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=200, help="timed batches (after 10 untimed)")
    p.add_argument("--demand", type=float, help="the training step's images/s, for the ratio")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root, rng, shards = Path(tmp), np.random.default_rng(0), []
        for k, start in enumerate(range(0, args.images, args.shard_size)):
            n = min(args.shard_size, args.images - start)
            moments = rng.standard_normal((n, 2, 2, 4, 32, 32), dtype=np.float32)
            write_shard(root / shard_name(k), moments)
            shards.append({"file": shard_name(k), "labels": rng.integers(0, 1000, n).tolist()})
        write_manifest(
            root,
            shards,
            classes=[str(i) for i in range(1000)],
            vae="bench",
            scale_factor=0.18215,
            image_size=256,
            latent_shape=[4, 32, 32],
        )
        dataset = LatentShards(root)
        sampler = ResumableSampler(len(dataset), args.batch, 0, 1, seed=0)
        loader = iter(
            DataLoader(
                dataset,
                args.batch,
                sampler=sampler,
                num_workers=args.workers,
                pin_memory=device.type == "cuda",
                drop_last=True,
                persistent_workers=args.workers > 0,
            )
        )
        gen = torch.Generator(device).manual_seed(0)
        for i in range(10 + args.batches):
            if i == 10:
                tic = time.perf_counter()
            x, _ = next(loader)
            z = draw_latents(
                x.to(device, non_blocking=True), dataset.scale_factor, gen, slice(0, args.batch), args.batch
            )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = args.batches * args.batch / (time.perf_counter() - tic)
    ratio = f" = {rate / args.demand:.1f}x the step's {args.demand:g} images/s" if args.demand else ""
    print(
        f"latent loader: {rate:.0f} images/s (batch {args.batch}, {args.workers} workers, {device.type}, "
        f"out {tuple(z.shape)}){ratio}"
    )


if __name__ == "__main__":
    main()
