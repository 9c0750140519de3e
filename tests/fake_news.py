"""A local fake news web server (RSS/Atom feeds, a CryptoPanic-like API, an LLM
endpoint): what the news tests cannot reach. Each path serves a list of responses in
turn (the last repeats); a response is (status, body, headers, delay_s). Requests are
recorded with their headers, so tests can check conditional requests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Response = tuple[int, bytes, dict[str, str], float]


class FakeNews:
    def __init__(self) -> None:
        self.routes: dict[str, list[Response] | Callable[[dict[str, Any]], Response]] = {}
        self.requests: list[dict[str, Any]] = []
        self._served: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, body: bytes = b"") -> None:
                u = urlsplit(self.path)
                req = {"path": u.path, "query": u.query, "headers": dict(self.headers), "body": body}
                fake.requests.append(req)
                route = fake.routes.get(u.path)
                if route is None:
                    status, out, headers, delay = 404, b"not found", {}, 0.0
                elif callable(route):
                    status, out, headers, delay = route(req)
                else:
                    i = fake._served.get(u.path, 0)
                    fake._served[u.path] = i + 1
                    status, out, headers, delay = route[min(i, len(route) - 1)]
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    if status != 304:
                        self.wfile.write(out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:  # noqa: N802
                self._serve()

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                self._serve(self.rfile.read(n))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rss(items: list[tuple[str, str, str]], title: str = "Fake Crypto News") -> bytes:
    """RSS 2.0 with (guid, RFC 822 date or "", title) items."""
    out = [f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>'
           "<link>http://x/</link><description>d</description>"]
    for guid, date, t in items:
        out.append(f"<item><guid>{guid}</guid><title>{t}</title><link>http://x/{guid}</link>"
                   + (f"<pubDate>{date}</pubDate>" if date else "")
                   + f"<description>&lt;p&gt;{t} summary&lt;/p&gt;</description></item>")
    out.append("</channel></rss>")
    return "".join(out).encode()


def atom(items: list[tuple[str, str, str]]) -> bytes:
    """Atom 1.0 with (id, RFC 3339 date, title) entries."""
    out = ['<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
           "<title>Fake Atom</title><id>urn:fake</id><updated>2025-03-03T00:00:00Z</updated>"]
    for iid, date, t in items:
        out.append(f"<entry><id>{iid}</id><title>{t}</title><updated>{date}</updated>"
                   f'<link href="http://a/{iid.rsplit(":", 1)[-1]}"/><summary>{t}</summary></entry>')
    out.append("</feed>")
    return "".join(out).encode()
