"""Sample a trained model across processes into one ADM-format ``.npz`` (arr_0 uint8 NHWC, arr_1 int64 labels).

    torchrun --nproc_per_node=8 sample_ddp.py --ckpt RUN/checkpoints/0400000.pt --num-samples 50000 \\
        --sampler heun --steps 50 --cfg-scale 1.5
    python sample_ddp.py --ckpt DiT-XL-2-256x256.pt --model DiT-XL/2 --sampler ddpm --steps 250 --cfg-channels 3

Sample i has label i mod K and its own noise seed (--seed + i); batches of --per-proc-batch-size are dealt to
ranks round-robin, so at a fixed batch size the file is byte-identical for any number of processes. Each batch
is written as a shard when done; a re-run skips finished shards, and rank 0 streams them into the final file.
Model, diffusion and decoder settings come from the checkpoint (see sampling/source.py for releases).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from data.vae import load_vae
from diffusion import create_diffusion, switch_at_sigma
from diffusion.samplers import SAMPLERS, get_sampler
from sampling import assemble_npz, image_grid, load_for_sampling, read_shard, shard_path, write_shard
from sampling.generate import BatchSampler, batch_starts, guided_model, rank_starts
from training import dist, precision
from training.atomic import WriteError, atomic_write, remove_stale_outputs, write_text_atomic
from training.cli import OneLineParser, fail


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--ckpt", required=True, help="our checkpoint (RUN/checkpoints/NNNNNNN.pt), or a released DiT / Min-SNR file")
    a("--model", help="the model name; needed for released DiT checkpoints, checked against ours")
    a("--weights", choices=("ema", "raw"), default="ema", help="our checkpoints hold both; releases are EMA")
    a("--low-ckpt", help="noise-band attribution: use this checkpoint where σ_t ≤ --switch-sigma, --ckpt above it")
    a("--switch-sigma", type=float, default=1.0, help="the level σ = 1/√SNR where --low-ckpt takes over")
    a("--sampler", choices=SAMPLERS, default="heun", help="heun = EDM Heun, the paper's; ddpm = DiT's")
    a("--steps", type=int, default=50, help="how many noise levels (NFE = steps; Heun: 2·steps − 1)")
    a("--cfg-scale", type=float, default=1.5, help="classifier-free guidance scale; 1 = no guidance")
    a("--cfg-channels", type=int, help="guide only the first N output channels (DiT's parity setting: 3)")
    a(
        "--guidance-interval",
        help="LO,HI: guide only where LO ≤ σ_t ≤ HI (Kynkäänniemi et al. 2024); t:LO,HI: only "
        "at model timesteps LO..HI, the official Min-SNR form (t:0,800 for its FID 1.57)",
    )
    a(
        "--sigma-max",
        type=float,
        default=80.0,
        help="Heun, DPM++: the largest σ of the EDM levels (clipped to the model's)",
    )
    a("--rho", type=float, default=7.0, help="Heun, DPM++: the EDM level spacing ρ (7 = EDM's and the paper's)")
    a("--num-samples", type=int, default=50_000)
    a("--per-proc-batch-size", type=int, default=32)
    a("--seed", type=int, default=0, help="sample i uses seed + i")
    a("--precision", choices=precision.DTYPES, default="fp32", help="fp32 | tf32 (CUDA) | bf16 | fp16 autocast")
    a("--vae", help="override the decoder the checkpoint records: a VAE id or directory, or 'none' for pixels")
    a("--out", type=Path, help="the .npz to write (default: RUN/samples/<step>-<sampler><steps>-cfg<s>-<N>.npz)")
    a("--png-dir", type=Path, help="also write every sample as PNG here")
    args = p.parse_args(argv)
    if args.num_samples < 2 or args.per_proc_batch_size < 1 or args.steps < 1:
        p.error("--num-samples must be >= 2, --per-proc-batch-size and --steps >= 1")
    if args.sigma_max <= 0 or args.rho <= 0:
        p.error(f"--sigma-max and --rho must be > 0, got {args.sigma_max:g} and {args.rho:g}")
    if args.guidance_interval:
        kind, _, text = args.guidance_interval.rpartition(":")
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            lo = None
        if lo is None or kind not in ("", "t"):
            p.error(f"--guidance-interval takes LO,HI (σ) or t:LO,HI (timesteps), got {args.guidance_interval!r}")
        args.guidance_interval = (lo, hi, kind or "sigma")
    if args.out is None:
        ckpt = Path(args.ckpt)
        folder = ckpt.parent.parent / "samples" if ckpt.parent.name == "checkpoints" else Path("samples")
        args.out = folder / f"{ckpt.stem}-{args.sampler}{args.steps}-cfg{args.cfg_scale:g}-{args.num_samples}.npz"
    return args


def outputs(args) -> dict[str, Path | None]:
    """Every path this script writes to, a file or a folder it fills. Writers take their path from here, and setup
    removes what a killed run left of each, so a new output is cleaned up with the others."""
    shards = args.out.parent / f"{args.out.name}.shards"
    return {"npz": args.out, "grid": args.out.with_suffix(".png"), "shards": shards, "pngs": args.png_dir}


def settings(args, spec) -> dict:
    """What determines the pixels; a re-run must match it to reuse shards."""
    keep = (
        "ckpt",
        "weights",
        "sampler",
        "steps",
        "cfg_scale",
        "cfg_channels",
        "guidance_interval",
        "sigma_max",
        "rho",
        "num_samples",
        "per_proc_batch_size",
        "seed",
        "precision",
        "vae",
        "low_ckpt",
        "switch_sigma",
    )
    low = str(Path(args.low_ckpt).resolve()) if args.low_ckpt else None
    return {
        **{k: getattr(args, k) for k in keep},
        "ckpt": str(Path(args.ckpt).resolve()),
        "low_ckpt": low,
        "model": spec.model,
        "prediction": spec.prediction,
        "noise_schedule": spec.noise_schedule,
        "decoder": spec.decoder,
    }


def setup(args, ctx: dist.Context) -> dict:
    """Load and validate everything; raises ValueError (one line) before any sampling."""
    model, spec = load_for_sampling(args.ckpt, args.model, args.weights, ctx.device)
    if args.cfg_scale != 1 and spec.null_class is None:
        raise ValueError(
            f"--cfg-scale {args.cfg_scale} needs an unconditional class, and this model has none "
            "(trained with --class-dropout 0); use --cfg-scale 1"
        )
    channels = spec.model_kwargs["in_channels"]
    if args.cfg_channels is not None and not 1 <= args.cfg_channels <= channels:
        raise ValueError(f"--cfg-channels {args.cfg_channels} is not within 1..{channels}")
    diffusion = create_diffusion(
        noise_schedule=spec.noise_schedule,
        prediction=spec.prediction,
        learn_sigma=spec.model_kwargs["learn_sigma"],
        diffusion_steps=spec.diffusion_steps,
    )
    ts = get_sampler(args.sampler).timesteps(diffusion, args.steps, sigma_max=args.sigma_max, rho=args.rho)
    decoder = spec.decoder if args.vae is None else (None if args.vae == "none" else args.vae)
    spec.decoder = decoder
    vae = load_vae(decoder, ctx.device) if decoder else None

    if args.low_ckpt:
        low_model, low_spec = load_for_sampling(args.low_ckpt, args.model, args.weights, ctx.device)
        low_spec.decoder = spec.decoder if args.vae is not None else low_spec.decoder  # --vae overrides both
        same = ("model_kwargs", "prediction", "noise_schedule", "diffusion_steps", "decoder", "transform")
        if differ := [k for k in same if getattr(low_spec, k) != getattr(spec, k)]:
            raise ValueError(
                f"--low-ckpt {args.low_ckpt} differs from --ckpt in {', '.join(differ)}; the two "
                "models must share the target, schedule and data space"
            )
        model = switch_at_sigma(model, low_model, diffusion, args.switch_sigma)

    guided = guided_model(
        model,
        ctx.device,
        args.precision,
        args.cfg_scale,
        spec.null_class,
        args.cfg_channels,
        args.guidance_interval,
        diffusion,
    )
    paths = outputs(args)
    shards = paths["shards"]
    wanted = settings(args, spec)
    shards.mkdir(parents=True, exist_ok=True)
    if args.png_dir:
        args.png_dir.mkdir(parents=True, exist_ok=True)
    record = shards / "settings.json"
    if record.exists() and json.loads(record.read_text()) != json.loads(json.dumps(wanted)):
        raise ValueError(f"{shards} holds shards made with other settings; delete it or choose another --out")
    if ctx.is_main:  # what a run killed mid-write left; no rank writes before the barrier
        remove_stale_outputs(*paths.values())
    dist.barrier()  # every rank has checked the record before rank 0 rewrites it
    if ctx.is_main:
        write_text_atomic(record, json.dumps(wanted, indent=1))
    return {"guided": guided, "diffusion": diffusion, "ts": ts, "vae": vae, "spec": spec, "shards": shards}


@torch.no_grad()
def sample(args, ctx: dist.Context, guided, diffusion, ts: list[int], vae, spec, shards: Path) -> None:
    B, N = args.per_proc_batch_size, args.num_samples
    starts = batch_starts(N, B)
    todo = {s for s in starts if not shard_path(shards, s).exists()}
    mine = [s for s in rank_starts(starts, ctx.rank, ctx.world_size) if s in todo]
    shape = (spec.model_kwargs["in_channels"], spec.model_kwargs["input_size"], spec.model_kwargs["input_size"])
    draw = BatchSampler(
        guided,
        get_sampler(args.sampler),
        ts,
        diffusion,
        shape,
        spec.num_classes,
        spec.to_data,
        vae,
        args.seed,
        ctx.device,
    )
    done = sum(min(B, N - s) for s in starts if s not in todo)
    bar = tqdm(total=N, initial=done, unit="img", disable=not ctx.is_main, desc="sample")
    for start in mine:
        stop = min(start + B, N)
        images, y = draw(start, stop)
        for i, image in enumerate(images if args.png_dir else []):
            with atomic_write(args.png_dir / f"{start + i:06d}.png") as tmp:
                Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(tmp, format="PNG")
        write_shard(shards, start, images, y.cpu().numpy())  # last: a re-run redoes a batch whose shard is missing
        bar.update(min(N - bar.n, (stop - start) * ctx.world_size))
    bar.close()


def finish(args, shards: Path) -> None:
    """Rank 0: stream the shards into the final .npz and save an 8×8 grid of the first 64 samples."""
    paths = [shard_path(shards, s) for s in range(0, args.num_samples, args.per_proc_batch_size)]
    missing = [p.name for p in paths if not p.exists()]
    if missing:
        raise RuntimeError(f"shards missing after sampling: {missing[:3]}")
    n = assemble_npz(paths, args.out)
    first = read_shard(paths[0], "arr_0")
    for p in paths[1:]:
        if len(first) >= 64:
            break
        first = np.concatenate([first, read_shard(p, "arr_0")])
    grid = image_grid(first[:64], columns=8)
    grid_path = outputs(args)["grid"]
    with atomic_write(grid_path) as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    print(f"wrote {args.out} ({n} samples, {tuple(first.shape[1:])} uint8) and {grid_path}")


def main() -> None:
    args = parse_args()
    ctx = dist.init()
    precision.configure(ctx.device, args.precision)
    try:
        parts = setup(args, ctx)
    except (ValueError, FileNotFoundError) as err:
        fail("sample_ddp.py", err)
    for note in parts["spec"].notes if ctx.is_main else []:
        print(f"note: {note}", file=sys.stderr)
    tic = time.time()
    try:
        sample(args, ctx, **parts)
        dist.barrier()
        if ctx.is_main:
            finish(args, parts["shards"])
            elapsed = time.time() - tic
            print(f"{elapsed:.1f} s on {ctx.world_size} process(es), assembly included")
    except WriteError as err:
        fail("sample_ddp.py", err, 1)
    dist.shutdown()


if __name__ == "__main__":
    main()
