"""Selective scan and SS2D cross-scan kernels. The scan backend is chosen here, never by model code."""

from mdseg.kernels.backends import BACKENDS, auto_backend, backend_status, resolve_backend
from mdseg.kernels.cross_scan import cross_merge, cross_scan
from mdseg.kernels.reference import selective_scan_reference
from mdseg.kernels.selective_scan import selective_scan

__all__ = [
    "BACKENDS",
    "auto_backend",
    "backend_status",
    "cross_merge",
    "cross_scan",
    "resolve_backend",
    "selective_scan",
    "selective_scan_reference",
]
