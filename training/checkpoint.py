"""Checkpoints: atomic writes, keep-last-K, newest-first discovery, and loads that never run pickled code.

Our checkpoints hold only tensors, numbers, strings and plain containers, so ``torch.load(weights_only=True)``
reads them; a file that would need arbitrary code is refused with a clear message.
"""

import re
from pathlib import Path

import torch

from training.atomic import WriteError, atomic_write

_NAME = re.compile(r"^(\d{7})\.pt$")


def save_atomic(obj: dict, path: str | Path) -> None:
    """``torch.save`` through ``atomic_write``: a crash at any moment leaves the old checkpoint or the new one.
    torch reports a full disk as a ``RuntimeError`` of its zip writer; that becomes a ``WriteError`` too."""
    path = Path(path)
    with atomic_write(path) as tmp, tmp.open("wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as err:
            raise WriteError(path, f"torch.save failed: {str(err).splitlines()[0]}") from err


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints ``NNNNNNN.pt`` in ``directory``, oldest first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def prune_checkpoints(directory: str | Path, keep: int, keep_every: int | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything) and, with ``keep_every``, the
    milestones whose step divides by it."""
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            if not keep_every or int(old.stem) % keep_every:
                old.unlink()


def load_weights_only(source, path: str | Path, map_location="cpu"):
    """``torch.load(source, weights_only=True)`` where ``source`` is ``path`` or its bytes. Every failure becomes
    one ValueError line naming ``path``: code-carrying pickles are refused as such, and anything else (random
    bytes, a cut file, another format) is called unreadable. torch's own advice to load unsafely is never quoted."""
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # junk fails in many ways: UnpicklingError, RuntimeError, EOFError, KeyError, ...
        text = str(err).split("WeightsUnpickler error:")[-1]
        lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
        first = lines[0] if lines else type(err).__name__
        if first.startswith("Unsupported global"):  # the pickle names Python code to run
            raise ValueError(
                f"refusing to load {path}: it needs arbitrary pickled code, which is never executed here ({first})"
            ) from None
        raise ValueError(
            f"{path} is unreadable or truncated, or not a PyTorch file ({type(err).__name__}: {first})"
        ) from None


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint through :func:`load_weights_only`; a missing file is one clear line too."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    return load_weights_only(path, path, map_location)
