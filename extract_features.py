"""Encode an ImageNet-style image folder into SD-VAE latent shards for train.py.

    torchrun --nproc_per_node=8 extract_features.py --data-path imagenet/train --out latents/in256

For every image it stores the posterior mean and std of the image and of its horizontal flip (ADM center crop),
so training draws a fresh flip and posterior sample each step. Shard k holds images [k·S, (k+1)·S) of the sorted
folder; rank r writes the shards with k mod world_size = r. Finished shards are skipped on a re-run; rank 0
writes ``manifest.json`` last, with the per-channel mean and std of the latents that training draws (for
``train.py --data-norm channel``). Bad input ends in one line and exit code 2.
"""

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from data.images import ImageFolder
from data.latents import shard_name, write_manifest, write_shard
from data.normalization import latent_channel_stats
from data.vae import SCALE_FACTOR, VAES, load_vae
from training import dist
from training.atomic import WriteError, remove_stale_outputs
from training.cli import OneLineParser, fail


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-path", required=True, help="image folder: one subfolder per class")
    p.add_argument("--out", required=True, help="output directory for shards and manifest.json")
    p.add_argument("--image-size", type=int, default=256, help="ADM center-crop size (256 or 512)")
    p.add_argument("--vae", default="mse", help="mse (the paper's) | ema | a hub id | a local AutoencoderKL directory")
    p.add_argument("--shard-size", type=int, default=10_000, help="images per shard")
    p.add_argument("--batch-size", type=int, default=64, help="images per VAE call")
    p.add_argument("--num-workers", type=int, default=4, help="image-decoding processes per rank")
    return p.parse_args(argv)


@torch.no_grad()
def encode(vae, x: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] images -> [B, 2, 2, C, h, w] moments: (image, flipped) × (posterior mean, posterior std)."""
    out = []
    for view in (x, x.flip(-1)):
        posterior = vae.encode(view).latent_dist
        out.append(torch.stack([posterior.mean, posterior.std], dim=1))
    return torch.stack(out, dim=1).float().cpu().numpy()


def extract(args, ctx, dataset: ImageFolder, vae) -> None:
    """Encode the shards this rank owns and has not written yet; rank 0 then writes the manifest."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:  # what a run killed mid-write left; no rank writes before the barrier
        remove_stale_outputs(out)
    dist.barrier()
    num_shards = math.ceil(len(dataset) / args.shard_size)
    mine = [k for k in range(ctx.rank, num_shards, ctx.world_size) if not (out / shard_name(k)).exists()]
    todo = sum(min(args.shard_size, len(dataset) - k * args.shard_size) for k in mine)
    bar = tqdm(total=todo, unit="img", desc=f"rank {ctx.rank}", disable=not ctx.is_main and ctx.world_size > 8)
    with bar:  # closed, its line ended, before any error is printed
        for k in mine:
            indices = range(k * args.shard_size, min((k + 1) * args.shard_size, len(dataset)))
            loader = DataLoader(Subset(dataset, indices), args.batch_size, num_workers=args.num_workers)
            moments = []
            for b, (x, y) in enumerate(loader):
                if (y < 0).any():
                    raise dataset.unreadable(indices[b * args.batch_size + int((y < 0).nonzero()[0])])
                moments.append(encode(vae, x.to(ctx.device)))
                bar.update(len(x))
            write_shard(out / shard_name(k), np.concatenate(moments))
    dist.barrier()
    if ctx.is_main:
        labels = [label for _, label in dataset.samples]
        shards = [
            {"file": shard_name(k), "labels": labels[k * args.shard_size : (k + 1) * args.shard_size]}
            for k in range(num_shards)
        ]
        shape = list(np.load(out / shard_name(0), mmap_mode="r").shape[3:])
        arrays = [np.load(out / shard_name(k), mmap_mode="r") for k in range(num_shards)]
        norm = latent_channel_stats(a[i : i + 1000] for a in arrays for i in range(0, len(a), 1000))
        write_manifest(
            out,
            shards,
            classes=dataset.classes,
            vae=VAES.get(args.vae, args.vae),
            scale_factor=SCALE_FACTOR,
            image_size=args.image_size,
            latent_shape=shape,
            normalization=norm.record(),
        )
        print(f"wrote {len(dataset)} images in {num_shards} shards to {out}")


def main() -> None:
    args = parse_args()
    ctx = dist.init()
    try:
        if not Path(args.data_path).is_dir():
            raise ValueError(f"--data-path {args.data_path} does not exist or is not a directory")
        dataset = ImageFolder(args.data_path, args.image_size)
        vae = load_vae(args.vae, ctx.device)
    except ValueError as err:
        fail("extract_features.py", err)
    try:
        extract(args, ctx, dataset, vae)
    except (ValueError, WriteError) as err:  # an image unreadable past its header; a full disk
        fail("extract_features.py", err, 2 if isinstance(err, ValueError) else 1)
    dist.shutdown()


if __name__ == "__main__":
    main()
