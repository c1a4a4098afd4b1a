"""Training (torchrun train.py --weighting min_snr).

Not built yet: issue #4 builds it on the tested `diffusion` package.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py: not built yet (issue #4); the diffusion package is ready, see README.md")
