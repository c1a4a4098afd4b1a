"""ADM-protocol evaluation (FID, sFID, IS, precision/recall).

Not built yet: issue #5 builds it on the tested `diffusion` package.
"""

import sys

if __name__ == "__main__":
    sys.exit("evaluate_fid.py: not built yet (issue #5); the diffusion package is ready, see README.md")
