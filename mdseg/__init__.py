"""mdseg: land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""

import os
from importlib.metadata import PackageNotFoundError, version

# torch and numba each keep an OpenMP thread pool; by default idle OpenMP threads spin, and on a laptop the
# two pools then fight for the cores after every numba kernel (measured: a tiny-model tile took 7.6 s
# instead of 0.27 s on 2 cores). Passive waiting costs nothing measurable. Set before torch or numba
# start their pools; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mdseg.errors import MdsegError

try:
    __version__ = version("mdseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["MdsegError", "__version__"]
