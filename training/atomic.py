"""Atomic file writes: every file this codebase produces (checkpoints, sample shards and .npz, statistics, caches,
downloads) is written through ``atomic_write``, so a crash never leaves a half-written file where a good one was."""

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.NAME.XXXX.tmp``, same filesystem) to write to. If the block
    finishes, the file is fsynced and renamed over ``path``; if it raises, the temporary file is deleted. Either way
    ``path`` holds the old file or the whole new one."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
