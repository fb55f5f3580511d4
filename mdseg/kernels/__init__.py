"""Selective scan and SS2D cross-scan kernels. The scan backend is chosen here, never by model code."""

from mdseg.kernels.backends import BACKENDS, auto_backend, backend_status, resolve_backend
from mdseg.kernels.cross_scan import cross_merge, cross_scan, to_scan_order
from mdseg.kernels.reference import selective_scan_reference
from mdseg.kernels.selective_scan import selective_scan
from mdseg.kernels.ss2d import ss2d_scan

__all__ = [
    "BACKENDS",
    "auto_backend",
    "backend_status",
    "cross_merge",
    "cross_scan",
    "resolve_backend",
    "selective_scan",
    "selective_scan_reference",
    "ss2d_scan",
    "to_scan_order",
]
