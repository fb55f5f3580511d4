"""A static file server with HTTP Range support on the loopback address, for the tests of remote inputs.

`served(root)` runs it in a subprocess (RangeHTTPServer's handler on a free port of 127.0.0.1 only) and yields a
`Served` that gives URLs and counts the body bytes sent per path (from the server's own log), so a test can tell a
windowed read from a download. Run as a script: `python range_server.py ROOT LOG` prints the port.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Served:
    """A running server: `url(name)` for a file under its root, `bytes_sent(name)` so far (bodies only)."""

    port: int
    log: Path

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def bytes_sent(self, name: str | None = None) -> int:
        total = 0
        for line in self.log.read_text().splitlines():
            path, sent = line.split("\t")
            if name is None or path == f"/{name}":
                total += int(sent)
        return total

    def requests(self, name: str) -> int:
        return sum(line.split("\t")[0] == f"/{name}" for line in self.log.read_text().splitlines())


@contextmanager
def served(root: Path, log: Path) -> Iterator[Served]:
    """Serve `root` on 127.0.0.1 (a free port) while the block runs; each response's body bytes go to `log`."""
    log.write_text("")
    proc = subprocess.Popen(
        [sys.executable, __file__, str(root), str(log)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        port = int(proc.stdout.readline())
        yield Served(port, log)
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> None:
    """End a test server process: SIGTERM, then SIGKILL only if it is still there after a generous wait (a busy
    machine may take a while to schedule it)."""
    proc.terminate()
    try:
        proc.wait(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _main(root: str, log: str) -> None:
    import http.server

    from RangeHTTPServer import RangeRequestHandler

    class CountingHandler(RangeRequestHandler):
        """RangeHTTPServer's handler, logging the body bytes of each response; a range's end is honoured even
        when it is byte 0 (the package's own copy reads to the end of the file then)."""

        def copyfile(self, source, outputfile) -> None:
            start, stop = self.range if self.range else (0, None)
            source.seek(start or 0)
            left = None if stop is None else stop + 1 - (start or 0)
            sent = 0
            while left is None or left > 0:
                block = source.read(CHUNK if left is None else min(CHUNK, left))
                if not block:
                    break
                outputfile.write(block)
                sent += len(block)
                left = None if left is None else left - len(block)
            with open(log, "a") as f:
                f.write(f"{self.path}\t{sent}\n")

        def log_message(self, format: str, *args: object) -> None:  # quiet: the byte log is what tests read
            pass

    handler = functools.partial(CountingHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
