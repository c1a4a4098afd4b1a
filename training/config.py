"""train.py's flags, ``--config FILE`` (TOML) presets, and the effective configuration saved beside a run."""

import argparse
import math
import os
import sys
import tomllib
from pathlib import Path

from diffusion.params import Param
from diffusion.samplers import SAMPLERS
from diffusion.timesteps import DENSITIES, DENSITY_PARAMS, OBJECTIVES
from diffusion.weighting import WEIGHTING_PARAMS, WEIGHTINGS
from evaluation.features import EXTRACTORS
from training.launch import accelerate_overrides
from training.precision import DTYPES

from .cli import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        description="Train a class-conditional diffusion transformer. Run alone (`python train.py`) or under "
        "`torchrun --nproc_per_node=N train.py`. With no --data-path it trains on Fashion-MNIST on the CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--config", help="TOML file of flag values (underscored names); flags given on the command line win")
    a("--model", default="ViT-T/4", help="registry name, e.g. DiT-XL/2, ViT-B/2, DiT-T/4 (see models/)")
    a("--data-path", help="latents from extract_features.py, or an image folder; none = Fashion-MNIST")
    a("--vae", default="mse", help="for image folders: mse | ema | a hub id | a local directory | none (pixels)")
    a("--image-size", type=int, default=256, help="center-crop size for image folders")
    a(
        "--data-norm",
        default="none",
        choices=("none", "channel"),
        help="none: pixels as they are, latents × the SD scale 0.18215 (the paper's); channel: standardise each "
        "channel by its training-set mean and std (latents: from the manifest)",
    )
    a(
        "--results-dir",
        help="the run directory (checkpoints, logs); default results/<model>-<prediction>-<weighting>"
        "[-<option> ...]-s<seed>, naming each loss option that differs from its default",
    )
    a("--prediction", default="x0", help="what the network predicts: eps | x0 | v")
    a("--weighting", default="min_snr", help="loss weighting (diffusion/weighting.py): " + " | ".join(WEIGHTINGS))
    add_params(p, WEIGHTING_PARAMS)  # --snr-gamma, --sigma-data, --sigmoid-bias, ...
    a(
        "--timestep-sampling",
        default="uniform",
        choices=DENSITIES,
        help="the training density of t (diffusion/timesteps.py): uniform (the paper's), logit_normal (SD3), "
        "laplace (Hang et al. 2024)",
    )
    add_params(p, DENSITY_PARAMS)  # --logit-normal M S, --laplace MU B, ...
    a(
        "--learned-uncertainty",
        action="store_true",
        help="EDM2's learned u(λ): loss = w·MSE/e^u + u (diffusion/uncertainty.py); composes with any weighting",
    )
    a(
        "--timestep-objective",
        default="resampled",
        choices=OBJECTIVES,
        help="resampled: keep the weights (the papers' practice); uniform: divide them by T·p_t, so the loss "
        "estimates the uniform-t objective and only its variance changes",
    )
    a("--noise-schedule", default="cosine", help="linear | cosine | scaled_linear")
    a("--diffusion-steps", type=int, default=1000, help="T")
    a("--learn-sigma", action=argparse.BooleanOptionalAction, default=False, help="learn ADM's variance too")
    a("--global-batch-size", type=int, default=64, help="images per step over all processes")
    a(
        "--grad-accum",
        type=int,
        default=1,
        help="split each process's share of the batch into K micro-batches (one optimizer step per K)",
    )
    a("--lr", type=float, default=1e-4, help="AdamW learning rate after warm-up")
    a("--adam-betas", type=float, nargs=2, default=(0.9, 0.999), help="AdamW β1 β2 (the paper's ViT: 0.99 0.99)")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    a("--warmup-steps", type=int, default=0, help="linear learning-rate warm-up from 0")
    a("--grad-clip", type=float, default=0.0, help="clip the global grad norm to this (0 = no clipping)")
    a("--max-steps", type=int, default=2000, help="train until this step")
    a("--ema-decay", type=float, default=0.9999, help="EMA decay, updated every step")
    a("--class-dropout", type=float, default=0.1, help="probability of training on the null label (for CFG)")
    a(
        "--precision",
        default="fp32",
        choices=DTYPES,
        help="fp32 | tf32 (CUDA matmuls) | bf16 | fp16 autocast; weights stay fp32",
    )
    a("--compile", action="store_true", help="torch.compile the model")
    a("--grad-checkpoint", action="store_true", help="recompute each block in backward (less memory)")
    a("--qk-norm", action="store_true", help="LayerNorm on q and k (stabilises bf16 attention)")
    a("--ckpt-every", type=int, default=1000, help="checkpoint every N steps (and at the end)")
    a("--keep-checkpoints", type=int, default=3, help="keep the newest K checkpoints (0 = all)")
    a("--keep-every", type=int, help="also keep every checkpoint whose step divides by N (the curve's milestones)")
    a("--log-every", type=int, default=50, help="log every N steps")
    a("--num-workers", type=int, default=2, help="data-loader processes per rank")
    a("--seed", type=int, default=0, help="seeds the model init, the data order and every per-step draw")
    a("--resume", help="auto (the newest checkpoint in the run directory, if any) or a checkpoint path")
    add_eval_flags(p)
    return p


def add_eval_flags(p: argparse.ArgumentParser) -> None:
    """Scoring during training (training/scoring.py, docs/training.md#scoring-during-training)."""
    g = p.add_argument_group("scoring during training (the EMA weights; sampled as sample_ddp.py samples)")
    a = g.add_argument
    a(
        "--eval-every",
        type=int,
        default=0,
        help="score the EMA weights every N steps and at the last step, into metrics.csv and TensorBoard, with a "
        "grid per evaluation in RUN/eval/ (0 = never)",
    )
    a(
        "--eval-samples",
        type=int,
        default=1000,
        help="samples per evaluation (sample i: label i mod K, seed --eval-seed + i); a multiple of "
        "--eval-batch-size × the number of processes",
    )
    a("--eval-batch-size", type=int, default=50, help="samples per process and batch")
    a("--eval-sampler", choices=SAMPLERS, default="heun", help="heun = EDM Heun, the paper's")
    a("--eval-steps", type=int, default=25, help="noise levels (Heun: 2·steps − 1 model calls)")
    a("--eval-cfg-scale", type=float, default=1.5, help="classifier-free guidance scale; 1 = none")
    a("--eval-seed", type=int, default=0, help="sample i uses seed + i, as sample_ddp.py --seed")
    a(
        "--eval-ref",
        help="the reference: fashion-test (the default without --data-path), ADM's reference batch .npz, a "
        "statistics file of make_reference.py or evaluate_fid.py --save-ref-stats, or images",
    )
    a(
        "--eval-extractor",
        choices=EXTRACTORS,
        help="the feature space: fashion (FD-fashion, the default without --data-path) or inception (FID)",
    )
    a("--eval-weights", help="the extractor's weights; Inception's default: torch's hub cache, else a download")
    a("--eval-precision", choices=DTYPES, help="sampling precision; default bf16 on CUDA, fp32 on the CPU")


def parser_defaults() -> dict:
    """Every flag's built-in default (no config file applied)."""
    return vars(build_parser().parse_args([]))


def add_params(parser: argparse.ArgumentParser, params: dict[str, Param]) -> None:
    """One flag per parameter of a loss table (diffusion/params.py), named after it: snr_gamma is --snr-gamma."""
    for name, param in params.items():
        nargs = len(param.default) if isinstance(param.default, tuple) else None
        flag = "--" + name.replace("_", "-")
        parser.add_argument(
            flag, type=float, nargs=nargs, default=param.default, metavar=param.metavar, help=param.help
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; a ``--config`` file sets new defaults first, then accelerate's launcher settings apply where
    neither sets them (training/launch.py). Unknown config keys are an error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    values = {}
    if args.config:
        try:
            values = tomllib.loads(Path(args.config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"--config {args.config}: {err}") from None
        actions = {a.dest: a for a in parser._actions}
        if unknown := sorted(set(values) - set(actions)):
            raise ValueError(f"--config {args.config}: unknown keys {unknown}")
        for key, value in values.items():
            if wanted := config_type_error(actions[key], value):
                raise ValueError(f"--config {args.config}: {key} = {value!r} is not {wanted}")
        parser.set_defaults(**values)
        args = parser.parse_args(argv)
    if not 0 <= args.lr < math.inf:  # lr 0 is allowed: it measures the loss of a frozen model
        raise ValueError(f"--lr must be a finite number >= 0, got {args.lr}")
    tokens = sys.argv[1:] if argv is None else argv
    given = {
        key: getattr(args, key)
        for key in ("precision", "grad_accum")
        if key in values or any(t.split("=")[0] == "--" + key.replace("_", "-") for t in tokens)
    }
    vars(args).update(accelerate_overrides(os.environ, given))
    if args.grad_accum < 1:
        raise ValueError(f"--grad-accum must be >= 1, got {args.grad_accum}")
    if args.keep_every is not None and args.keep_every < 1:
        raise ValueError(f"--keep-every must be >= 1, got {args.keep_every}")
    return args


def config_type_error(action: argparse.Action, value) -> str | None:
    """What a config value should have been for its flag, or None if it is fine (argparse checks no defaults)."""
    if action.type is None and action.nargs == 0:  # a switch
        return None if isinstance(value, bool) else "true or false"
    kind = action.type or str
    checks = {
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    fits = checks.get(kind, lambda v: isinstance(v, str))
    name = {int: "an integer", float: "a number"}.get(kind, "a string")
    if action.nargs is not None:
        return None if isinstance(value, list) and all(fits(v) for v in value) else f"a list of {name.split()[-1]}s"
    if not fits(value):
        return name
    if action.choices is not None and value not in action.choices:
        return f"one of {', '.join(map(str, action.choices))}"
    return None
