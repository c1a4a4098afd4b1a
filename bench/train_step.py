"""Training-step speed against the machine's own matmul ceiling, measured in one process.

    python bench/train_step.py --model DiT-S/2 --batch 32                       # CPU, fp32
    python bench/train_step.py --model DiT-XL/2 --batch 32 --precision bf16 --compile [--grad-checkpoint]

One step is train.py's own ``training.step.train_step`` (x0, Min-SNR-5; backward, gradient clipping at 1.0, fused
AdamW), then the foreach EMA.
Model FLOPs per step = 3 (forward + backward) × 2 × forward multiply-adds × batch; MFU is the
achieved rate over a dense matmul in the same precision: on the CPU 1024² operands (the issue's yardstick),
timed right after every step, since a shared CPU's rate drifts; on CUDA the model's own MLP shape
(batch·tokens × hidden × 4·hidden) and 8192².
"""

import argparse
import json
import os
import resource
import statistics
import time
from pathlib import Path

import torch

from diffusion import create_diffusion
from models import ALL_MODELS, create_model
from models.flops import forward_macs
from training import precision
from training.ema import update_ema
from training.step import Batch, StepParts, make_optimizer, train_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        tic = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - tic)
    return times


def append_jsonl(path: Path | None, row: dict) -> None:
    """Append ``row`` as one JSON line to ``path`` (every bench script's --json); nothing when path is None."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def matmul_flops_per_s(m: int, k: int, n: int, dtype: torch.dtype, device: torch.device, iters: int) -> float:
    """FLOP/s of a dense [m, k] @ [k, n] product (2·m·k·n FLOPs), median of ``iters`` timed calls."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    times = time_calls(lambda: a @ b, device, warmup=3, iters=iters)
    return 2 * m * k * n / statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="DiT-S/2", choices=ALL_MODELS, metavar="NAME")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 = ImageNet 256 through the SD VAE)")
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--precision", choices=precision.DTYPES, default="fp32")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    p.add_argument("--grad-checkpoint", action="store_true")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    p.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="CPU: keep freed memory in the process (training/malloc.py, as train.py does) or glibc's "
        "default thresholds (the before of that change)",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = p.parse_args()

    device = torch.device(args.device)
    precision.configure(device, args.precision, keep_memory=args.malloc == "keep")
    torch.manual_seed(0)
    model = create_model(
        args.model,
        input_size=args.input_size,
        in_channels=args.channels,
        num_classes=1000,
        grad_checkpoint=args.grad_checkpoint,
    ).to(device)
    macs = forward_macs(model, 1)
    ema = create_model(args.model, input_size=args.input_size, in_channels=args.channels, num_classes=1000).to(device)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = make_optimizer(argparse.Namespace(lr=1e-4, adam_betas=(0.9, 0.999), weight_decay=0.0), model.parameters())
    diffusion = create_diffusion(
        prediction="x0", weighting="min_snr", learn_sigma=model.out_channels == 2 * args.channels
    )
    net = torch.compile(model) if args.compile else model
    gen = torch.Generator(device).manual_seed(0)
    x0 = torch.randn(args.batch, args.channels, args.input_size, args.input_size, device=device, generator=gen)
    y = torch.randint(0, 1000, (args.batch,), device=device, generator=gen)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")
    parts = StepParts(net, model, None, opt, scaler, diffusion, args.precision, grad_clip=1.0)

    def step() -> None:
        t = diffusion.sample_timesteps(args.batch, device, gen)
        train_step(parts, Batch(x0, t, torch.randn_like(x0), y, None), lr=1e-4)
        update_ema(ema, model, 0.9999)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dtype = precision.DTYPES[args.precision]
    if device.type == "cpu":
        # A shared CPU's matmul rate drifts by up to 30% from minute to minute, so the yardstick is measured right
        # after every timed step (5 products of 1024² operands), and the MFU is the median of the per-step ratios.
        for _ in range(args.warmup):
            step()
        rates = []
        for _ in range(args.steps):
            tic = time.perf_counter()
            step()
            rates.append((time.perf_counter() - tic, matmul_flops_per_s(1024, 1024, 1024, dtype, device, 5)))
        times = [dt for dt, _ in rates]
        yardsticks = {"matmul_1024": statistics.median(r for _, r in rates)}
        mfu = {"mfu_vs_matmul_1024": statistics.median(3 * 2 * macs * args.batch / dt / r for dt, r in rates)}
    else:
        times = time_calls(step, device, args.warmup, args.steps)
        tokens = args.batch * (args.input_size // model.patch_size) ** 2
        hidden = model.pos_embed.shape[-1]
        yardsticks = {
            "matmul_mlp": matmul_flops_per_s(tokens, hidden, 4 * hidden, dtype, device, 50),
            "matmul_8192": matmul_flops_per_s(8192, 8192, 8192, dtype, device, 20),
        }
    peak = (
        torch.cuda.max_memory_allocated(device)
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    median = statistics.median(times)
    usage = resource.getrusage(resource.RUSAGE_SELF)  # system time is mostly page faults on fresh memory
    model_flops = 3 * 2 * macs * args.batch / median
    if device.type == "cuda":
        mfu = {f"mfu_vs_{k}": model_flops / v for k, v in yardsticks.items()}
    result = {
        "model": args.model,
        "batch": args.batch,
        "input": [args.channels, args.input_size, args.input_size],
        "precision": args.precision,
        "compile": args.compile,
        "grad_checkpoint": args.grad_checkpoint,
        "malloc": args.malloc,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}",
        "torch": torch.__version__,
        "images_per_s": args.batch / median,
        "step_ms_median": 1e3 * median,
        "step_ms_iqr": 1e3 * (statistics.quantiles(times, n=4)[2] - statistics.quantiles(times, n=4)[0]),
        "steps_timed": args.steps,
        "peak_memory_gib": peak / 2**30,
        "forward_gmacs_per_image": macs / 1e9,
        "model_tflops": model_flops / 1e12,
        **{f"{k}_tflops": v / 1e12 for k, v in yardsticks.items()},
        **mfu,
        "system_time_share": usage.ru_stime / (usage.ru_utime + usage.ru_stime),
    }
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    append_jsonl(args.json, result)


if __name__ == "__main__":
    main()
