"""Process-group setup for torchrun (nccl on CUDA, gloo on CPU) that also works as a plain single process."""

import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under torchrun (a process group exists, even of one), False for a plain ``python`` run."""
        return dist.is_initialized()


def init() -> Context:
    """Join the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK, or run alone when they are unset.
    Under torchrun a process group is made even for one process, so one GPU exercises nccl and DDP as eight do.
    The device is ``cuda:LOCAL_RANK`` (never the global rank, which exceeds the GPU count on multi-node runs)."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():  # under torchrun, even with one process
        importlib.import_module("torch._dynamo")  # before the group exists: see shutdown()
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return Context(rank, world, local, device)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over all ranks (``x`` itself when running alone)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``x`` over all ranks."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group together: a barrier, then the group destroyed, which joins gloo's worker threads.

    That join is what makes the exit clean. A worker that finishes an all-reduce drops its tensors, which takes
    the GIL; if that falls into interpreter shutdown, the thread is killed inside a C++ destructor and the process
    aborts ("terminate called without an active exception"). The group is only destroyed if nothing else holds it,
    and importing torch._dynamo while a group exists leaves it referenced for good. DDP imports torch._dynamo, so
    ``init`` imports it before making the group; tests/test_train.py checks that no thread is left behind."""
    if dist.is_initialized():
        barrier()
        dist.destroy_process_group()
