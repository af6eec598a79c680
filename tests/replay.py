"""A loopback HTTP server that answers with recorded OpenAI responses, byte for byte.

The recordings in `tests/fixtures/recorded/` are real API answers; replaying them to the real
SDK tests the plugin on exactly what OpenAI sent, not on what we think it sends.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def load_recording(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


class ReplayServer:
    """Serves queued recordings in order, to whatever request comes."""

    def __init__(self) -> None:
        self._queue: deque[tuple[int, str, bytes]] = deque()
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                status, content_type, body = replay._queue.popleft()
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def enqueue(self, recording: dict[str, Any]) -> None:
        status = int(recording.get("response_status", 200))
        if "response_sse" in recording:
            self._queue.append((status, "text/event-stream", recording["response_sse"].encode()))
        else:
            self._queue.append((status, "application/json", json.dumps(recording["response"]).encode()))

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
