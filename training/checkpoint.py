"""Checkpoints: atomic writes, keep-last-K, newest-first discovery, and loads that never run pickled code.

Our checkpoints hold only tensors, numbers, strings and plain containers, so ``torch.load(weights_only=True)``
reads them; a file that would need arbitrary code is refused with a clear message.
"""

import pickle
import re
from pathlib import Path

import torch

from training.atomic import atomic_write

_NAME = re.compile(r"^(\d{7})\.pt$")


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` through ``atomic_write``: a crash at any moment leaves the old checkpoint or the new one."""
    with atomic_write(path) as tmp, tmp.open("wb") as f:
        torch.save(obj, f)


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints ``NNNNNNN.pt`` in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            old.unlink()


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)``; raises ValueError with one clear line for a missing, corrupt or
    code-carrying file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"refusing to load {path}: it needs arbitrary pickled code, which is never executed here ({first})"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"checkpoint {path} is unreadable or truncated: {str(err).splitlines()[0]}") from None
