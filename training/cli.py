"""How every command-line script ends on an error: one line on stderr and exit code 2 (usage, bad input) or 1."""

import argparse
import sys
from typing import NoReturn

from training import dist


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error prints ``prog: error: message (see --help)`` alone, without the usage block."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def fail(prog: str, err: Exception | str, code: int = 2) -> NoReturn:
    """End a script: ``prog: error: err`` as its one line on stderr, the process group left, and exit ``code``
    (2: bad input, refused before any work; 1: a run that failed, on a full disk say)."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    dist.shutdown()
    sys.exit(code)
