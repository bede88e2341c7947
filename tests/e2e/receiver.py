"""A webhook receiver for the tests: an HTTP server on 127.0.0.1, on a thread, that keeps every alert and
checks its signature."""

import hashlib
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


class Receiver:
    """An HTTP receiver on 127.0.0.1, on a thread: keeps every POST (path, headers, body)."""

    def __init__(self, secret: str, refusals: dict[str, int] | None = None) -> None:
        """``refusals``: how many of its first requests each path answers 500."""
        self.secret = secret
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self.refusals = dict(refusals or {})
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.received.append(
                        (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    refuse = receiver.refusals.get(self.path, 0) > 0
                    if refuse:
                        receiver.refusals[self.path] -= 1
                self.send_response(500 if refuse else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def alerts(self, path: str) -> list[dict[str, Any]]:
        """The alerts a webhook received (each once: the attempts refused are sent again, the same)."""
        with self._lock:
            received = list(self.received)
        alerts: dict[str, dict[str, Any]] = {}
        for where, headers, body in received:
            if where == path:
                expected = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
                assert headers["x-orthanc-jobs-signature"] == f"sha256={expected}"
                alert = orjson.loads(body)
                assert headers["x-orthanc-jobs-event"] == alert["Event"]
                assert headers["x-orthanc-jobs-delivery"] == alert["Delivery"]
                assert headers["content-type"] == "application/json"
                alerts[alert["Delivery"]] = alert
        return list(alerts.values())

    def about_job(self, path: str, event: str, job_id: str) -> list[dict[str, Any]]:
        return [a for a in self.alerts(path) if a["Event"] == event and a["Job"]["ID"] == job_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
