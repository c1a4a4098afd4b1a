"""Run a script with every atomic write slowed down, so that a kill -9 campaign lands inside saves.

    python tests/slow_writes.py train.py ARGS...          # also as torchrun's script

``training.atomic.atomic_write`` creates a temporary file (``tempfile.mkstemp``), writes it, fsyncs it and renames
it into place. This wrapper pauses SLOW_WRITES_S seconds (default 0.3) after the temporary file is created and
again before its fsync, so a kill at a random moment often leaves an empty or a complete but unrenamed temporary
file: the two states a crash inside a save can leave. Nothing else about the script changes: it runs as
``python SCRIPT`` would run it, with the script's folder (not this one's) first on the import path.
"""

import os
import runpy
import sys
import tempfile
import time

PAUSE = float(os.environ.get("SLOW_WRITES_S", "0.3"))
_mkstemp, _fsync = tempfile.mkstemp, os.fsync


def slow_mkstemp(*args, **kwargs):
    created = _mkstemp(*args, **kwargs)
    time.sleep(PAUSE)
    return created


def slow_fsync(fd):
    time.sleep(PAUSE)
    _fsync(fd)


if __name__ == "__main__":
    tempfile.mkstemp, os.fsync = slow_mkstemp, slow_fsync
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # what `python SCRIPT` puts there, in place of ours
    runpy.run_path(script, run_name="__main__")
