"""``timelapse view DIR``: the HTTP side of the viewer (docs/view.md).

A ``ThreadingHTTPServer`` bound to 127.0.0.1 only, answering ``GET`` for the page's own static files
and the JSON routes of ``api``; the trace is read by ``TraceIndex.build`` in a background thread while
the server already answers. What it refuses, and why:

- any address but loopback: it binds 127.0.0.1, never 0.0.0.0;
- a request whose ``Host`` is not ``127.0.0.1:PORT`` or ``localhost:PORT``: another web page, through a
  DNS name rebound to 127.0.0.1, would otherwise read the trace (a trace holds the program's data);
- any path but the routes: static files are served by name from a fixed list (the files shipped in
  ``static/``), sources only as the trace's own copies by path id (``TraceIndex.source_copy``): no path
  from the request is ever joined to a folder.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import orjson

from timelapse.reader import TraceUnreadable
from timelapse.viewer import api
from timelapse.viewer.index import TraceIndex

__all__ = ["ViewServer", "run_view"]

_STATIC = Path(__file__).with_name("static")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def _to_json(data: Any) -> bytes:
    """JSON bytes of ``data``. orjson refuses a string with a lone surrogate (a trace.json may spell
    one, ``"\\ud800"``): then the standard library's, which escapes it (and JSON.parse reads it)."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return json.dumps(data, ensure_ascii=True).encode("ascii")


def _static_files() -> dict[str, Path]:
    """The page's files, by name: the only files served besides the trace's sources."""
    if not _STATIC.is_dir():
        return {}
    return {entry.name: entry for entry in _STATIC.iterdir()
            if entry.is_file() and entry.suffix in _CONTENT_TYPES}


class ViewServer:
    """The viewer of one trace folder, on 127.0.0.1.

    ``ViewServer(folder, port=0)`` reads the side files (``TraceUnreadable`` for a folder that is not a
    trace) and binds the port (0: a free one; ``OSError`` if it is taken); ``start()`` (or ``with``)
    starts reading the trace and serving, each in a daemon thread; ``serve_forever()`` serves in the
    calling thread instead; ``close()`` stops both and deletes the index's temporary file.
    """

    def __init__(self, folder: str | os.PathLike[str], port: int = 0) -> None:
        self.index = TraceIndex(folder)
        self.static = _static_files()
        try:
            self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        except BaseException:
            self.index.close()
            raise
        self._httpd.viewer = self
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self._builder = threading.Thread(target=self.index.build, name="timelapse-view-index", daemon=True)
        self._serving: threading.Thread | None = None

    def start(self) -> None:
        self._builder.start()
        self._serving = threading.Thread(target=self._httpd.serve_forever, name="timelapse-view-server",
                                         daemon=True)
        self._serving.start()

    def serve_forever(self) -> None:
        self._builder.start()
        self._httpd.serve_forever()

    def wait_indexed(self, timeout: float | None = None) -> bool:
        """Wait until the whole trace is read; False if ``timeout`` seconds passed first."""
        return self.index.done.wait(timeout)

    def close(self) -> None:
        if self._serving is not None:
            self._httpd.shutdown()
            self._serving.join()
        self._httpd.server_close()
        if self._builder.is_alive():   # its temporary files are closed below: let it stop first
            self.index.stop()
            self._builder.join()
        self.index.close()

    def __enter__(self) -> ViewServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    viewer: ViewServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver would print a traceback; a browser that closed its connection is no error.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            print(f"timelapse: view: a request failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def _int(query: dict[str, list[str]], name: str, default: int | None = None) -> int:
    values = query.get(name)
    if not values:
        if default is None:
            raise api.BadRequest(f"missing the argument {name!r}")
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise api.BadRequest(f"{name} must be an integer, not {values[-1][:40]!r}") from None


def _text(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values:
        raise api.BadRequest(f"missing the argument {name!r}")
    return values[-1]


#: route -> what answers it, from the index and the query.
_ROUTES: dict[str, Callable[[TraceIndex, dict[str, list[str]]], dict[str, Any]]] = {
    "/api/trace": lambda index, q: api.trace_info(index),
    "/api/source": lambda index, q: api.source(index, _int(q, "path")),
    "/api/step": lambda index, q: api.step(index, _int(q, "i")),
    "/api/go": lambda index, q: api.go(index, _int(q, "i"), _text(q, "how")),
    "/api/calls": lambda index, q: api.calls(index, _int(q, "parent"), _int(q, "offset", 0), _int(q, "limit", 100)),
    "/api/call": lambda index, q: api.call(index, _int(q, "c")),
    "/api/output": lambda index, q: api.output(index, _int(q, "offset", 0), _int(q, "limit", 200)),
    "/api/history": lambda index, q: api.history(index, _int(q, "i"), _text(q, "name"), _int(q, "limit", 200),
                                                 _int(q, "before") if "before" in q else None),
}


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "timelapse-view"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        viewer = self.server.viewer
        if self.headers.get("Host", "") not in viewer.hosts:
            self._json(HTTPStatus.FORBIDDEN, {"error": "this server answers only requests for "
                                                        f"127.0.0.1:{viewer.port} or localhost:{viewer.port}"})
            return
        url = urlsplit(self.path)
        route = url.path
        if route == "/":
            route = "/static/index.html"
        if route.startswith("/static/"):
            file = viewer.static.get(route[len("/static/"):])
            if file is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {route}"})
            else:
                self._send(HTTPStatus.OK, _CONTENT_TYPES[file.suffix], file.read_bytes())
            return
        answer = _ROUTES.get(route)
        if answer is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such route: {route}"})
            return
        try:
            body = answer(viewer.index, parse_qs(url.query, keep_blank_values=True))
        except api.NotReady as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc), "retry": True})
        except (api.BadRequest, api.NotFound) as exc:
            self._json(HTTPStatus(exc.status), {"error": str(exc)})
        except Exception as exc:    # a damaged trace's record where the index expected another shape
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})
        else:
            self._json(HTTPStatus.OK, body)

    def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        self._send(status, "application/json", _to_json(body))

    def _send(self, status: HTTPStatus, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass    # a request log would bury the one line that matters: the address


def run_view(folder: str, *, port: int = 0, open_browser: bool = True) -> int:
    """``timelapse view``: serve until Ctrl-C. Returns the exit status."""
    try:
        server = ViewServer(folder, port)
    except TraceUnreadable as exc:
        print(f"timelapse: error: {folder}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"timelapse: error: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"timelapse: viewing {folder} at {server.url} (Ctrl-C to stop)", flush=True)
    if open_browser:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
