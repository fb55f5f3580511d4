"""`mdseg` sets glibc malloc up to keep freed blocks (`mdseg.alloc`), unless MDSEG_MALLOC=system.

Each test runs the real entry point in a fresh interpreter (the settings are per process), then asks glibc
whether a 64 MiB block comes from the heap or from a fresh mmap (`mallinfo2().hblks`, the count of mapped
blocks): glibc's defaults map it, mdseg's settings (no mapping) do not.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc malloc only"
)

PROBE = """
import ctypes, sys
from mdseg.cli import main

sys.argv = ["mdseg", "--version"]
try:
    main()
except SystemExit:
    pass

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
block = libc.malloc(64 * 2**20)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
print("mapped", mapped)
"""


def mapped_blocks_after_cli(env: dict[str, str]) -> int:
    """Mapped blocks a 64 MiB malloc adds after `mdseg --version` ran in a fresh interpreter under `env`."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    return int(done.stdout.split("mapped")[-1])


def test_the_cli_serves_a_64_mib_block_from_the_heap():
    assert mapped_blocks_after_cli({"MDSEG_MALLOC": ""}) == 0


def test_mdseg_malloc_system_leaves_glibc_mapping_a_64_mib_block():
    assert mapped_blocks_after_cli({"MDSEG_MALLOC": "system"}) == 1
