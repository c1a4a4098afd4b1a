"""The argument parser of every command-line script: a usage error is one line on stderr and exit code 2."""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error prints ``prog: error: message (see --help)`` alone, without the usage block."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
