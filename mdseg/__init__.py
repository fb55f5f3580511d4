"""mdseg: land-cover maps from co-registered optical + SAR images with a Mamba-diffusion model."""

from importlib.metadata import PackageNotFoundError, version

from mdseg.errors import MdsegError

try:
    __version__ = version("mdseg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["MdsegError", "__version__"]
