"""Train a class-conditional diffusion transformer with a selectable loss weighting (Min-SNR-γ by default).

    python train.py                                   # Fashion-MNIST, ViT-T/4, x0 + Min-SNR-5, on the CPU
    torchrun --nproc_per_node=8 train.py --config configs/vit-b2_x0_min_snr.toml --data-path LATENTS

Exact resume: the data order and every random draw are functions of (seed, step), and a checkpoint holds the
model, EMA, optimizer, scaler and step, so a resumed run repeats the uninterrupted one bit for bit (CPU, fp32).
Bad input ends in one line and exit code 2 before any work starts.
"""

import copy
import json
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from data import ResumableSampler, open_training_data
from diffusion.loss import Loss
from models import check_model_name, create_model
from training import dist, precision
from training.atomic import WriteError, remove_stale_outputs, write_text_atomic
from training.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    make_checkpoint,
    model_arch,
    prune_checkpoints,
    read_for_resume,
    restore,
    save_atomic,
)
from training.cli import fail
from training.config import parse_args, parser_defaults
from training.ema import update_ema
from training.logger import RunLogger
from training.rundir import check_run_dir, default_run_dir
from training.scoring import Evaluator, check_eval_flags, eval_defaults, write_grid
from training.step import BandLog, StepParts, draw_batch, learning_rate, make_optimizer, train_step


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
    arch = model_arch(vars(args), data.shape, data.num_classes)  # what checkpoints record of the model
    model = create_model(arch["name"], **arch["kwargs"], grad_checkpoint=args.grad_checkpoint).to(ctx.device)
    logvar = loss.logvar  # EDM2's u(λ) with --learned-uncertainty, else None
    run_dir = Path(args.results_dir) if args.results_dir else default_run_dir(args, parser_defaults())
    check_run_dir(run_dir, args)
    resume = None
    if args.resume == "auto":
        found = list_checkpoints(run_dir / "checkpoints")
        resume = found[-1] if found else None
        newest = torch.tensor([int(resume.stem) if resume else -1], device=ctx.device)
        if dist.all_reduce_max(newest) != -dist.all_reduce_max(-newest):
            raise ValueError(
                f"the ranks see different newest checkpoints in {run_dir / 'checkpoints'}: --resume "
                "auto needs a filesystem that every node shares (docs/training.md)"
            )
    elif args.resume:
        resume = Path(args.resume)
    state = read_for_resume(resume, args, data, model) if resume is not None else None
    evaluator = Evaluator(args, ctx, data, model.null_class) if args.eval_every else None  # last: it does work
    return {
        "diffusion": diffusion,
        "data": data,
        "model": model,
        "logvar": logvar,
        "run_dir": run_dir,
        "state": state,
        "resume": resume,
        "evaluator": evaluator,
    }


def train(
    args,
    ctx: dist.Context,
    diffusion,
    data,
    model,
    logvar,
    run_dir: Path,
    state: dict | None,
    resume,
    evaluator: Evaluator | None = None,
) -> None:
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = make_optimizer(args, [*model.parameters(), *(logvar.parameters() if logvar is not None else [])])
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=args.precision == "fp16")
    step = restore(state, model, ema, opt, scaler, logvar) if state is not None else 0
    net = DistributedDataParallel(model) if ctx.distributed else model
    net = torch.compile(net) if args.compile else net
    u_net = DistributedDataParallel(logvar) if ctx.distributed and logvar is not None else logvar
    parts = StepParts(net, model, u_net, opt, scaler, diffusion, args.precision, args.grad_accum, args.grad_clip)

    batch = args.global_batch_size // ctx.world_size
    rows = slice(ctx.rank * batch, (ctx.rank + 1) * batch)  # this rank's part of the global batch
    sampler = ResumableSampler(len(data.dataset), args.global_batch_size, ctx.rank, ctx.world_size, args.seed, step)
    loader = iter(
        DataLoader(
            data.dataset,
            batch,
            sampler=sampler,
            num_workers=args.num_workers,
            pin_memory=ctx.device.type == "cuda",
            drop_last=True,
        )
    )
    eval_dir = run_dir / "eval" if evaluator is not None else None  # a sample grid per evaluation
    if ctx.is_main:
        for folder in filter(None, (run_dir / "checkpoints", eval_dir)):
            folder.mkdir(parents=True, exist_ok=True)
        remove_stale_outputs(run_dir, run_dir / "checkpoints", eval_dir)  # what a run killed mid-save left
        write_text_atomic(run_dir / "config.json", json.dumps(vars(args), indent=1))
    log = RunLogger(run_dir, ctx.is_main, step)
    origin = f"resumed from {resume} at step {step}" if resume else "from scratch"
    log.info(
        f"{args.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {data.description}; "
        f"{args.prediction}-prediction, {args.weighting} weighting; {ctx.world_size} process(es) on "
        f"{ctx.device.type}; {origin}"
    )
    if evaluator is not None:
        log.info(f"scoring every {args.eval_every} steps and at step {args.max_steps}: {evaluator.settings()}")

    bands = BandLog(diffusion, ctx.device)
    tic, bar = time.time(), tqdm(total=args.max_steps, initial=step, disable=not ctx.is_main, desc="train")
    while step < args.max_steps:
        x, y = next(loader)
        x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
        inputs = draw_batch(x, y, step, args, data, diffusion, rows, ctx.device)
        lr = learning_rate(args, step)
        try:
            loss, grad_norm, terms = train_step(parts, inputs, lr)
        except FloatingPointError as err:
            bar.close()
            raise FloatingPointError(
                f"non-finite loss or grad norm at step {step + 1} ({err.args[0]}); the last "
                f"checkpoint in {run_dir / 'checkpoints'} is intact"
            ) from None
        update_ema(ema, model, args.ema_decay)
        step += 1
        bar.update(1)

        bands.add(loss, grad_norm, inputs.t, terms)
        if step % args.log_every == 0 or step == args.max_steps:
            elapsed, n_steps = time.time() - tic, bands.steps
            means = bands.metrics(with_u=logvar is not None)
            speed = {
                "lr": lr,
                "steps_per_s": n_steps / elapsed,
                "images_per_s": n_steps * args.global_batch_size / elapsed,
            }
            log.metrics(step, {"loss": means.pop("loss"), "grad_norm": means.pop("grad_norm"), **speed, **means})
            tic = time.time()
        if evaluator is not None and (step % args.eval_every == 0 or step == args.max_steps):
            started = time.time()
            result = evaluator(ema, step)  # before the save: a run killed in between evaluates this step again
            if result is not None:
                write_grid(result.grid, eval_dir / f"{step:07d}.png")
                log.image("eval/samples", result.grid, step)
                log.metrics(step, {result.metric: result.value, "eval_s": result.seconds})
                for note in result.notes:
                    log.info(f"note: {note}")
            tic += time.time() - started  # steps/s counts training only
        if step % args.ckpt_every == 0 or step == args.max_steps:
            if ctx.is_main:
                try:
                    path = save(run_dir, step, args, data, model, ema, opt, scaler, logvar)
                except WriteError:
                    bar.close()
                    raise
                log.info(f"saved {path}")
            dist.barrier()
    bar.close()
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()])
    spread = (dist.all_reduce_max(checksum) + dist.all_reduce_max(-checksum)).abs().max()
    log.info(f"done at step {step}; weights identical on all {ctx.world_size} ranks: {bool(spread == 0)}")
    log.close()


def save(run_dir: Path, step: int, args, data, model, ema, opt, scaler, logvar) -> Path:
    """Write the step's checkpoint atomically and prune by the keep policy; returns its path."""
    path = checkpoint_path(run_dir / "checkpoints", step)
    save_atomic(make_checkpoint(args, data, model, ema, opt, scaler, step, logvar), path)
    prune_checkpoints(run_dir / "checkpoints", args.keep_checkpoints, args.keep_every)
    return path


def main() -> None:
    try:
        args = parse_args()
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        if args.global_batch_size % world_size:
            raise ValueError(f"--global-batch-size {args.global_batch_size} does not divide by {world_size} processes")
        if (args.global_batch_size // world_size) % args.grad_accum:
            raise ValueError(
                f"--grad-accum {args.grad_accum} does not divide the per-process batch "
                f"{args.global_batch_size // world_size}"
            )
        eval_defaults(args)
        check_eval_flags(args, world_size)
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
