"""Train a class-conditional diffusion transformer with a selectable loss weighting (Min-SNR-γ by default).

    python train.py                                   # Fashion-MNIST, ViT-T/4, x0 + Min-SNR-5, on the CPU
    torchrun --nproc_per_node=8 train.py --config configs/vit-b2_x0_min_snr.toml --data-path LATENTS

Exact resume: the data order and every random draw are functions of (seed, step), and a checkpoint holds the
model, EMA, optimizer, scaler and step, so a resumed run repeats the uninterrupted one bit for bit (CPU, fp32).
Bad input ends in one line and exit code 2 before any work starts.
"""

import copy
import hashlib
import json
import math
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import ResumableSampler, open_training_data
from diffusion.bands import BAND_NAMES, band_of_snr
from diffusion.loss import Loss
from models import check_model_name, create_model, load_weights
from training import dist, precision
from training.atomic import WriteError, remove_stale_temporaries, write_text_atomic
from training.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint, prune_checkpoints, save_atomic
from training.cli import fail
from training.config import parse_args
from training.ema import update_ema
from training.logger import RunLogger


def step_seed(seed: int, step: int, rank: int = -1) -> int:
    """The seed of every draw made at ``step``; rank -1 is shared by all ranks (used for whole-batch draws).
    Defined by a specification, so it never changes with the Python version: the first 8 bytes, little-endian,
    of SHA-256 of the ASCII text "seed:step:rank", with the top bit cleared."""
    digest = hashlib.sha256(f"{seed}:{step}:{rank}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def setup(args, ctx: dist.Context) -> dict:
    """Validate everything and build the run's parts; any bad input raises ValueError before work starts."""
    loss = Loss.from_args(args, ctx.device)  # LossConfig.from_args(args) over the flags' diffusion
    diffusion = loss.diffusion  # diffusion.loss is this loss
    check_model_name(args.model)
    data = open_training_data(args.data_path, args.vae, args.image_size, ctx.device, args.data_norm)
    channels, height, width = data.shape
    if height != width:
        raise ValueError(f"data {data.shape} is not square; the backbones take square inputs")
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = create_model(
        args.model,
        input_size=height,
        in_channels=channels,
        num_classes=data.num_classes,
        learn_sigma=args.learn_sigma,
        class_dropout_prob=args.class_dropout,
        qk_norm=args.qk_norm,
        grad_checkpoint=args.grad_checkpoint,
    ).to(ctx.device)
    logvar = loss.logvar  # EDM2's u(λ) with --learned-uncertainty, else None
    run_dir = Path(args.results_dir or f"results/{args.model.replace('/', '-')}-{args.prediction}-{args.weighting}")
    resume = None
    if args.resume == "auto":
        found = list_checkpoints(run_dir / "checkpoints")
        resume = found[-1] if found else None
    elif args.resume:
        resume = Path(args.resume)
    state = None
    if resume is not None:
        state = load_checkpoint(resume)
        if not isinstance(state, dict) or not {"model", "ema", "opt", "step", "args"} <= state.keys():
            keys = sorted(state)[:5] if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"--resume {resume} is not a training checkpoint of this codebase (it holds {keys})")
        saved_model = state["args"].get("model")
        if saved_model != args.model:
            raise ValueError(f"--resume {resume} is a checkpoint of {saved_model}, but --model is {args.model}")
        saved_norm = state.get("data", {}).get("normalization")
        if saved_norm != data.record()["normalization"]:
            raise ValueError(f"--resume {resume} was trained with data normalisation {saved_norm}, but this run has "
                             f"{data.record()['normalization']} (--data-norm {args.data_norm})")  # fmt: skip
        if ("uncertainty" in state) != args.learned_uncertainty:
            raise ValueError(f"--resume {resume} was trained {'with' if 'uncertainty' in state else 'without'} "
                             "--learned-uncertainty; resume it the same way")  # fmt: skip
        load_weights(model, state["model"], args.model)
        if logvar is not None:
            logvar.load_state_dict(state["uncertainty"])
    return {"diffusion": diffusion, "data": data, "model": model, "logvar": logvar, "run_dir": run_dir,
            "state": state, "resume": resume}  # fmt: skip


def train(args, ctx: dist.Context, diffusion, data, model, logvar, run_dir: Path, state: dict | None, resume) -> None:
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    params = [*model.parameters(), *(logvar.parameters() if logvar is not None else [])]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay,
                            fused=True)  # fmt: skip
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=args.precision == "fp16")
    step = 0
    if state is not None:
        load_weights(ema, state["ema"], args.model)
        opt.load_state_dict(state["opt"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
    net = DistributedDataParallel(model) if ctx.distributed else model
    net = torch.compile(net) if args.compile else net
    u_net = DistributedDataParallel(logvar) if ctx.distributed and logvar is not None else logvar

    batch = args.global_batch_size // ctx.world_size
    rows = slice(ctx.rank * batch, (ctx.rank + 1) * batch)  # this rank's part of the global batch
    sampler = ResumableSampler(len(data.dataset), args.global_batch_size, ctx.rank, ctx.world_size, args.seed, step)
    loader = iter(DataLoader(data.dataset, batch, sampler=sampler, num_workers=args.num_workers,
                             pin_memory=ctx.device.type == "cuda", drop_last=True))  # fmt: skip
    if ctx.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir / "checkpoints")  # a run killed mid-save leaves its temporary file
        remove_stale_temporaries(run_dir, "config.json")
        remove_stale_temporaries(run_dir, "metrics.csv")
        write_text_atomic(run_dir / "config.json", json.dumps(vars(args), indent=1))
    log = RunLogger(run_dir, ctx.is_main, step)
    origin = f"resumed from {resume} at step {step}" if resume else "from scratch"
    log.info(f"{args.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {data.description}; "
             f"{args.prediction}-prediction, {args.weighting} weighting; {ctx.world_size} process(es) on "
             f"{ctx.device.type}; {origin}")  # fmt: skip

    gen = torch.Generator(ctx.device)
    sums = torch.zeros(2, device=ctx.device, dtype=torch.float64)  # loss, grad norm, summed over steps
    band_of_t = torch.as_tensor(band_of_snr(diffusion.snr), device=ctx.device)  # [T] band index of each step
    band_sums = torch.zeros(3, len(BAND_NAMES), device=ctx.device, dtype=torch.float64)  # [x0-MSE sum, u sum, count]
    n_steps = 0
    tic, bar = time.time(), tqdm(total=args.max_steps, initial=step, disable=not ctx.is_main, desc="train")
    while step < args.max_steps:
        x, y = next(loader)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        gen.manual_seed(step_seed(args.seed, step))
        torch.manual_seed(step_seed(args.seed, step, ctx.rank))  # the model's label dropout
        x0 = data.prepare(x, gen, rows, args.global_batch_size)
        t = diffusion.sample_timesteps(args.global_batch_size, ctx.device, gen)[rows]
        noise = torch.randn((args.global_batch_size, *x0.shape[1:]), device=ctx.device, generator=gen)[rows]
        lr = args.lr * min(1.0, (step + 1) / args.warmup_steps) if args.warmup_steps else args.lr
        for group in opt.param_groups:
            group["lr"] = lr

        with precision.autocast(ctx.device, args.precision):
            terms = diffusion.loss(net, x0, t, {"y": y}, noise, u_net)  # with u(λ): w·MSE/e^u + u (+ vb)
        loss = terms["loss"].float().mean()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or math.inf)
        check = dist.all_reduce_mean(torch.stack([loss.detach(), grad_norm if args.precision != "fp16" else loss]))
        if not torch.isfinite(check).all():
            bar.close()
            raise FloatingPointError(f"non-finite loss or grad norm at step {step + 1} ({check.tolist()}); the last "
                                     f"checkpoint in {run_dir / 'checkpoints'} is intact")  # fmt: skip
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        update_ema(ema, model, args.ema_decay)
        step += 1
        bar.update(1)

        sums += torch.stack([loss.detach(), grad_norm.detach()]).double()
        n_steps += 1
        band = band_of_t[t]
        band_sums[0].index_add_(0, band, terms["x0_mse"].double())
        if "u" in terms:
            band_sums[1].index_add_(0, band, terms["u"].double())
        band_sums[2].index_add_(0, band, torch.ones_like(band, dtype=torch.float64))
        if step % args.log_every == 0 or step == args.max_steps:
            totals = dist.all_reduce_mean(torch.cat([sums / n_steps, band_sums.flatten()]))
            k = len(BAND_NAMES)
            # A band that no rank drew in this interval logs NaN (an empty cell), not a made-up zero.
            counts = totals[2 + 2 * k :].where(totals[2 + 2 * k :] > 0, math.nan)
            band_mse, band_u = totals[2 : 2 + k] / counts, totals[2 + k : 2 + 2 * k] / counts
            elapsed = time.time() - tic
            metrics = {"loss": totals[0], "grad_norm": totals[1], "lr": lr, "steps_per_s": n_steps / elapsed,
                       "images_per_s": n_steps * args.global_batch_size / elapsed,
                       **{f"x0_mse_{name}": band_mse[i] for i, name in enumerate(BAND_NAMES)}}  # fmt: skip
            if logvar is not None:  # the weighting u learned: the loss it left at each band
                metrics |= {f"u_{name}": band_u[i] for i, name in enumerate(BAND_NAMES)}
            log.metrics(step, {k: float(v) for k, v in metrics.items()})
            sums.zero_()
            band_sums.zero_()
            n_steps, tic = 0, time.time()
        if step % args.ckpt_every == 0 or step == args.max_steps:
            if ctx.is_main:
                path = checkpoint_path(run_dir / "checkpoints", step)
                record = {
                    "model": model.state_dict(),
                    "ema": ema.state_dict(),
                    "opt": opt.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "args": vars(args),
                    "data": {"seed": args.seed, "position": step * args.global_batch_size, **data.record()},
                }
                if logvar is not None:
                    record["uncertainty"] = logvar.state_dict()
                try:
                    save_atomic(record, path)
                except WriteError:
                    bar.close()
                    raise
                prune_checkpoints(run_dir / "checkpoints", args.keep_checkpoints)
                log.info(f"saved {path}")
            dist.barrier()
    bar.close()
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()])
    spread = (dist.all_reduce_max(checksum) + dist.all_reduce_max(-checksum)).abs().max()
    log.info(f"done at step {step}; weights identical on all {ctx.world_size} ranks: {bool(spread == 0)}")
    log.close()


def main() -> None:
    try:
        args = parse_args()
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if args.global_batch_size % world_size:
            raise ValueError(f"--global-batch-size {args.global_batch_size} does not divide by {world_size} processes")
    except ValueError as err:
        fail("train.py", err)
    ctx = dist.init()
    precision.configure(ctx.device, args.precision)
    try:
        parts = setup(args, ctx)
    except (ValueError, TypeError, FileNotFoundError) as err:
        fail("train.py", err)
    try:
        train(args, ctx, **parts)
    except (FloatingPointError, WriteError) as err:
        fail("train.py", err, 1)
    dist.shutdown()


if __name__ == "__main__":
    main()
