"""The optimizer step alone: AdamW with foreach against fused kernels, on one model's parameters.

    python bench/optimizer.py --model DiT-S/2          # CPU, fp32, random gradients

Both implementations are timed in alternating rounds in one process (median per round); the ratio is what
train.py gains per step by passing ``fused=True``. tests/test_training_parts.py checks that fused AdamW is AdamW.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench.train_step import append_jsonl, time_calls
from models import ALL_MODELS, create_model
from training import precision


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=ALL_MODELS, default="DiT-S/2")
    p.add_argument("--iters", type=int, default=6, help="timed steps per round (median reported)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="append each result as one JSON line")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision.configure(device, "fp32")
    torch.manual_seed(0)
    params = list(create_model(args.model).to(device).parameters())
    for param in params:
        param.grad = torch.randn_like(param)
    n = sum(param.numel() for param in params)
    for round_ in range(args.rounds):
        ms = {}
        for kind in ("foreach", "fused")[:: 1 if round_ % 2 == 0 else -1]:
            opt = torch.optim.AdamW(params, lr=1e-4, **{kind: True})
            ms[kind] = 1e3 * statistics.median(time_calls(opt.step, device, warmup=2, iters=args.iters))
        row = {
            "model": args.model,
            "params_m": round(n / 1e6, 2),
            "round": round_,
            "device": device.type,
            "threads": torch.get_num_threads(),
            "foreach_ms": round(ms["foreach"], 1),
            "fused_ms": round(ms["fused"], 1),
            "speedup": round(ms["foreach"] / ms["fused"], 2),
        }
        print(json.dumps(row))
        append_jsonl(args.json, row)


if __name__ == "__main__":
    main()
