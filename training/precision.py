"""The --precision choices of every script, in one table.

fp32 is IEEE fp32 throughout (TF32 off, also in cuDNN, where torch enables it by default); tf32 lets CUDA matmuls
and convolutions round their inputs to TF32; bf16 and fp16 run the forward under autocast. Weights, optimizer
state and the loss's reduction stay fp32 in every case. On the CPU, denormals are flushed to zero.
"""

import contextlib

import torch

from .malloc import keep_freed_memory

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def configure(device: torch.device, precision: str, keep_memory: bool = True) -> None:
    """Process-wide math settings for ``precision`` on ``device``; call once before building the model. On the CPU
    ``keep_memory`` also keeps freed memory in the process (``training.malloc``), a speed setting that leaves the
    results unchanged."""
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # zero-initialised layers fill early training with slow denormals
        if keep_memory:
            keep_freed_memory()
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bf16 / fp16 for those precisions, a no-op context for fp32 and tf32."""
    dtype = DTYPES[precision]
    return torch.autocast(device.type, dtype, enabled=dtype != torch.float32)
