"""Atomic file writes: every file this codebase produces (checkpoints, sample shards and .npz, statistics, caches,
downloads) is written through ``atomic_write``, so a crash never leaves a half-written file where a good one was."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriteError(OSError):
    """A file could not be written (a full disk, say); the file under its name, if any, is untouched."""

    def __init__(self, path: Path, reason: str):
        free = shutil.disk_usage(path.parent).free / 2**20
        super().__init__(f"cannot write {path} ({reason}; {free:.1f} MiB free there); what was under that name is kept")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (``.NAME.XXXX.tmp``, same filesystem) to write to. If the block
    finishes, the file is fsynced and renamed over ``path``; if it raises, the temporary file is deleted. Either way
    ``path`` holds the old file or the whole new one. An ``OSError`` on the way (a full disk) becomes a
    ``WriteError`` naming ``path``."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(path, err.strerror or str(err)) from err
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """``Path.write_text`` through :func:`atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(directory: str | Path, name: str = "*") -> int:
    """Delete the temporary files that writers killed mid-save left in ``directory`` (of final name ``name``, or
    of every name), and return how many. Call it only where no other process is writing there."""
    stale = list(Path(directory).glob(f".{name}.*.tmp")) if Path(directory).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def remove_stale_outputs(*outputs: str | Path | None) -> int:
    """:func:`remove_stale_temporaries` for everything a script writes, given as the paths it writes to: a folder
    it fills (every name in it) or a file (that name only, as its folder may hold other runs' files); ``None``, an
    output not asked for, is skipped. Scripts list each output once and write through that list, so a new output
    is cleaned up like the others. Returns how many temporaries were removed."""
    removed = 0
    for path in map(Path, filter(None, outputs)):
        removed += remove_stale_temporaries(path) if path.is_dir() else remove_stale_temporaries(path.parent, path.name)
    return removed
