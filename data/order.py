"""A data order that is a pure function of (seed, step): exact resume needs only the step, on any world size."""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Infinite, epoch-shuffled order. Global position p = step·global_batch + j reads item perm_e[p mod N] with
    epoch e = p // N and perm_e = randperm(N) seeded by (seed, e). Rank r takes positions
    [r·B, (r + 1)·B) of each global batch (B = global_batch / world_size), starting at ``start_step``."""

    def __init__(self, n: int, global_batch: int, rank: int, world_size: int, seed: int, start_step: int = 0):
        self.n, self.global_batch, self.seed, self.start_step = n, global_batch, seed, start_step
        self.local_batch = global_batch // world_size
        self.offset = rank * self.local_batch
        self._epoch, self._perm = -1, None

    def _item(self, position: int) -> int:
        epoch, i = divmod(position, self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return int(self._perm[i])

    def __iter__(self) -> Iterator[int]:
        step = self.start_step
        while True:
            base = step * self.global_batch + self.offset
            for j in range(self.local_batch):
                yield self._item(base + j)
            step += 1
