"""HTTP on loopback for the length of a block: an exported wheelhouse, a channel that
``giftbox verify`` installs from, a builder's one-shot pip configuration. One server loop, so
each caller says only what it serves."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Files of one directory, read-only, without a log line per request."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass


@contextlib.contextmanager
def serve(handler: Any, host: str = "127.0.0.1", port: int = 0,
          name: str = "giftbox-http") -> Iterator[str]:
    """``handler`` on ``host:port`` (0: a free port) while the block runs; yields the base
    URL (no trailing slash). The server is shut down and closed however the block ends."""
    server = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def serve_directory(root: Path, host: str = "127.0.0.1", port: int = 0,
                    name: str = "giftbox-http") -> contextlib.AbstractContextManager[str]:
    """The files under ``root``, read-only, as :func:`serve` does."""
    return serve(functools.partial(QuietHandler, directory=str(root)), host, port, name)
