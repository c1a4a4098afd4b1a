"""Attention alone against the machine's matmul ceiling, for one layer of DiT-S/2 by default.

    python bench/attention.py                      # batch 16, 6 heads, 256 tokens, 64 dims, CPU fp32

Times forward and forward + backward of ``F.scaled_dot_product_attention`` (what models/layers.py calls) and of
a plain alternative: batched matmuls and a softmax, with the probabilities recomputed in backward instead of
stored. Rates count 2·N²·d multiply-adds per head for the forward (QKᵀ and PV), 3× that for forward + backward,
as bench/train_step.py counts the model; each is divided by a 1024² matmul timed right after it. Both kernels'
outputs and gradients are checked against each other in float64 first.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.train_step import append_jsonl, matmul_flops_per_s, time_calls
from training import precision


class MatmulAttention(torch.autograd.Function):
    """softmax(q kᵀ / √d) v on [B·H, N, d] with batched matmuls; backward recomputes the probabilities P and uses
    dS = P ⊙ (dP − rowsum(dO ⊙ O)), the flash-attention identity, so only q, k, v and O are stored."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5
        out = torch.bmm(torch.softmax(torch.bmm(q * scale, k.transpose(1, 2)), dim=-1), v)
        ctx.save_for_backward(q, k, v, out)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        p = torch.softmax(torch.bmm(q * scale, k.transpose(1, 2)), dim=-1)  # [BH, N, N]
        grad_v = torch.bmm(p.transpose(1, 2), grad_out)
        grad_s = p.mul_(torch.bmm(grad_out, v.transpose(1, 2)).sub_((grad_out * out).sum(-1, keepdim=True)))
        return torch.bmm(grad_s, k).mul_(scale), torch.bmm(grad_s.transpose(1, 2), q).mul_(scale), grad_v


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """[B, H, N, d] wrapper of MatmulAttention."""
    flat = [t.reshape(-1, *t.shape[-2:]) for t in (q, k, v)]
    return MatmulAttention.apply(*flat).view(q.shape)


KERNELS = {"sdpa": F.scaled_dot_product_attention, "matmul-recompute": matmul_attention}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--iters", type=int, default=10, help="timed calls per measurement (median reported)")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds over the kernels")
    p.add_argument("--json", type=Path, help="append each result as one JSON line")
    args = p.parse_args()
    device = torch.device("cpu")
    precision.configure(device, "fp32")
    torch.manual_seed(0)

    q, k, v = (torch.randn(2, 3, 64, 32, dtype=torch.float64, requires_grad=True) for _ in range(3))
    outs = {name: fn(q, k, v) for name, fn in KERNELS.items()}
    grad = torch.randn_like(outs["sdpa"])
    grads = {name: torch.autograd.grad(o, (q, k, v), grad) for name, o in outs.items()}
    err = max((a - b).abs().max().item() for a, b in zip(grads["sdpa"], grads["matmul-recompute"], strict=True))
    err = max(err, (outs["sdpa"] - outs["matmul-recompute"]).abs().max().item())
    print(f"max difference of the two kernels in float64 (outputs and gradients): {err:.1e}")
    if err > 1e-10:
        sys.exit(f"attention.py: the two kernels disagree by {err:.1e} in float64; their timings would mean nothing")

    b, h, n, d = args.batch, args.heads, args.tokens, args.head_dim
    qkv = torch.randn(b, n, 3, h, d, requires_grad=True)  # the layout of models/layers.py's qkv linear
    fwd_macs = b * h * 2 * n * n * d

    def call(fn, backward: bool) -> None:
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, N, d] views
        out = fn(q, k, v)
        if backward:
            qkv.grad = None  # the model's backward writes its gradients; it does not accumulate into old ones
            out.sum().backward()

    for repeat in range(args.repeats):
        for name, fn in KERNELS.items():
            for backward in (False, True):
                seconds = statistics.median(
                    time_calls(lambda fn=fn, backward=backward: call(fn, backward), device, warmup=2, iters=args.iters)
                )
                yardstick = matmul_flops_per_s(1024, 1024, 1024, torch.float32, device, 5)
                rate = (3 if backward else 1) * 2 * fwd_macs / seconds
                row = {
                    "kernel": name,
                    "pass": "forward+backward" if backward else "forward",
                    "repeat": repeat,
                    "ms": round(1e3 * seconds, 2),
                    "tflops": round(rate / 1e12, 4),
                    "matmul_1024_tflops": round(yardstick / 1e12, 4),
                    "ratio": round(rate / yardstick, 3),
                    "shape": [b, h, n, d],
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }
                print(json.dumps(row))
                append_jsonl(args.json, row)


if __name__ == "__main__":
    main()
