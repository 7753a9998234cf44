"""A local HTTP server of a folder's files with byte ranges (what GDAL's /vsicurl/ reads)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP range requests; a subclass refuses requests by :meth:`allowed`."""

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def allowed(self) -> bool:
        return True

    def send_head(self):  # type: ignore[override]
        if not self.allowed():
            self.send_error(403, "no token")
            return None
        rng = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not rng or not rng.startswith("bytes=") or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start, _, end = rng.removeprefix("bytes=").partition("-")
        a, b = int(start), min(int(end) if end else len(data) - 1, len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(b - a + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return io.BytesIO(data[a : b + 1])


@contextlib.contextmanager
def serve(root: Path, handler: type[RangeHandler] = RangeHandler) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1 in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
