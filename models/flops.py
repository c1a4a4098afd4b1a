"""Multiply-add counter for one forward pass, the unit of DiT's Gflops table (S/2 6.06 … XL/2 118.64)."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# torch's table covers the CUDA and meta attention kernels; the CPU flash kernel needs the same formula added.


def _attention_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}


def forward_macs(model: nn.Module, batch_size: int = 1) -> int:
    """Multiply-adds of ``model(x, t, y)`` for ``batch_size`` inputs of the model's own shape.

    Counts matmuls, linears, convolutions and attention (QKᵀ and AV) through torch's FlopCounterMode, which reports
    2 FLOPs per multiply-add; we halve it. Norms, activations and softmax are not counted, as in DiT's table.
    Runs on the model's device (CPU, CUDA or meta); build on ``torch.device("meta")`` to count big ones for free.
    """
    p = next(model.parameters())
    x = torch.zeros(batch_size, model.in_channels, model.input_size, model.input_size, device=p.device, dtype=p.dtype)
    t = torch.zeros(batch_size, dtype=torch.long, device=p.device)
    y = torch.zeros(batch_size, dtype=torch.long, device=p.device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter, torch.no_grad():
        model(x, t, y)
    model.train(was_training)
    return counter.get_total_flops() // 2
