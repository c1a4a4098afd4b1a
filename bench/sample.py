"""Sampling speed per sampler and step count: images per second and model evaluations (NFE) per second.

    python bench/sample.py --model DiT-S/2 --batch 16                                  # CPU, small
    python bench/sample.py --model DiT-XL/2 --batch 64 --precision bf16 --runs ddpm:250,ddim:50,heun:50,dpm++:20

Weights are random (speed does not depend on them); guidance at --cfg-scale doubles the batch of every model call,
as in real sampling. Each run is timed once after one untimed warm-up batch of the same sampler at 2 steps.
``--cuda-graphs`` compiles with mode "reduce-overhead", which records each fixed-shape model call once and replays
it as a CUDA graph; compare it with ``--compile`` alone to see whether graphs pay (they pay when the GPU waits on
Python: small models, small batches).
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from bench.train_step import append_jsonl
from diffusion import classifier_free_guidance, create_diffusion
from diffusion.samplers import get_sampler
from models import ALL_MODELS, create_model
from training import precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="DiT-S/2", choices=ALL_MODELS, metavar="NAME")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--runs", default="ddpm:250,ddim:50,heun:50,dpm++:20", help="SAMPLER:STEPS,…")
    p.add_argument("--cfg-scale", type=float, default=1.5)
    p.add_argument("--precision", choices=precision.DTYPES, default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--cuda-graphs", action="store_true", help="torch.compile(mode='reduce-overhead'); CUDA only")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="append each result as one JSON line to this file")
    args = p.parse_args()

    device = torch.device(args.device)
    if args.cuda_graphs and device.type != "cuda":
        sys.exit(f"error: --cuda-graphs needs a CUDA device, got --device {args.device}")
    precision.configure(device, args.precision)
    torch.manual_seed(0)
    model = create_model(args.model, input_size=args.input_size, in_channels=args.channels, num_classes=1000)
    model = model.to(device).eval().requires_grad_(False)
    if args.cuda_graphs:
        forward = torch.compile(model, mode="reduce-overhead")
    else:
        forward = torch.compile(model) if args.compile else model
    nfe = 0

    def net(x, t, y):
        nonlocal nfe
        nfe += 1
        if args.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new replay; its output is copied below
        with precision.autocast(device, args.precision):
            out = forward(x, t, y)
        return out.float().clone() if args.cuda_graphs else out.float()

    diffusion = create_diffusion(learn_sigma=model.out_channels == 2 * args.channels)
    guided = classifier_free_guidance(net, args.cfg_scale, null_class=1000, diffusion=diffusion)
    x = torch.randn(args.batch, args.channels, args.input_size, args.input_size, device=device)
    y = torch.arange(args.batch, device=device) % 1000
    for run in args.runs.split(","):
        name, steps = run.split(":")
        sampler = get_sampler(name)
        sampler(guided, x, sampler.timesteps(diffusion, 2), diffusion, {"y": y})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        nfe, tic = 0, time.perf_counter()
        sampler(guided, x, sampler.timesteps(diffusion, int(steps)), diffusion, {"y": y})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - tic
        result = {
            "model": args.model,
            "batch": args.batch,
            "sampler": name,
            "steps": int(steps),
            "nfe": nfe,
            "cfg_scale": args.cfg_scale,
            "precision": args.precision,
            "compile": args.compile,
            "cuda_graphs": args.cuda_graphs,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "images_per_s": args.batch / seconds,
            "nfe_per_s": nfe / seconds,
            "seconds": seconds,
        }
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
        append_jsonl(args.json, result)


if __name__ == "__main__":
    main()
