"""A local web page over a loaded SysBank: search, filter and read prompts, constraints highlighted.

Standard library only (http.server): a JSON API under /api/ and a static page from `sysbank/web/`
with no external resources, so it works offline. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import mimetypes
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from rpo.utils.io import InputError

from sysbank.bank import LANGUAGES, Bank, Filters
from sysbank.loader import normalised_dict
from sysbank.ontology import CATEGORIES, OTHER

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
MAX_PAGE = 200


def _int_param(query: dict[str, list[str]], name: str, default: int | None = None) -> int | None:
    value = query.get(name, [""])[0].strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"parameter {name}: expected a whole number, got {value!r}") from None


def _text_param(query: dict[str, list[str]], name: str) -> str | None:
    value = query.get(name, [""])[0].strip()
    return value or None


def summary(bank: Bank, i: int) -> dict[str, Any]:
    """What a result row shows."""
    p = bank.profiles[i]
    return {
        "id": p.id,
        "name": p.name,
        "source": p.source,
        "language": bank.languages[i],
        "n_constraints": len(p.constraints),
        "description": p.description[:240],
    }


def detail(bank: Bank, i: int) -> dict[str, Any]:
    """A full record (§4.1 fields) plus what the page highlights: language and ontology tags."""
    return {
        **normalised_dict(bank.profiles[i]),
        "language": bank.languages[i],
        "constraint_categories": bank.constraint_categories[i],
        "location": str(bank.locations[i]),
    }


def search_api(bank: Bank, query: dict[str, list[str]]) -> dict[str, Any]:
    """`/api/search?q=&regex=1&source=&language=&category=&min=&max=&offset=&limit=`."""
    filters = Filters(
        source=_text_param(query, "source"),
        language=_text_param(query, "language"),
        category=_text_param(query, "category"),
        min_constraints=_int_param(query, "min"),
        max_constraints=_int_param(query, "max"),
    )
    text = query.get("q", [""])[0]
    regex = query.get("regex", ["0"])[0] in {"1", "true", "on"}
    hits = bank.search(text, regex=regex, filters=filters) if text else bank.select(filters)
    offset = max(0, _int_param(query, "offset", 0) or 0)
    limit = min(MAX_PAGE, max(1, _int_param(query, "limit", 50) or 50))
    return {
        "total": len(hits),
        "offset": offset,
        "items": [summary(bank, i) for i in hits[offset : offset + limit]],
    }


def meta_api(bank: Bank) -> dict[str, Any]:
    """Choices for the page's filter menus."""
    return {
        "total": len(bank),
        "sources": sorted({s for s in bank.sources if s}),
        "languages": list(LANGUAGES),
        "categories": [*CATEGORIES, OTHER],
        "max_constraints": max(bank.n_constraints, default=0),
    }


def make_handler(bank: Bank) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one bank."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "SysBank"

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path in STATIC_FILES:
                    self._static(STATIC_FILES[url.path])
                elif url.path == "/api/meta":
                    self._json(meta_api(bank))
                elif url.path == "/api/stats":
                    self._json(bank.stats())
                elif url.path == "/api/search":
                    self._json(search_api(bank, query))
                elif url.path == "/api/profile":
                    self._json(detail(bank, bank.get(query.get("id", [""])[0])))
                else:
                    self._json({"error": f"no such page: {url.path}"}, HTTPStatus.NOT_FOUND)
            except InputError as err:
                status = HTTPStatus.NOT_FOUND if url.path == "/api/profile" else HTTPStatus.BAD_REQUEST
                self._json({"error": str(err)}, status)

        def _static(self, name: str) -> None:
            body = (WEB_DIR / name).read_bytes()
            ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(body, f"{ctype}; charset=utf-8")

        def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self._send(json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8", status)

        def _send(self, body: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: one line per request would drown the URL line a user needs."""

    return Handler


def make_server(bank: Bank, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; port 0 picks a free port (see `server.server_address`)."""
    try:
        server = ThreadingHTTPServer((host, port), make_handler(bank))
    except OSError as err:
        raise InputError(f"--port: cannot listen on {host}:{port} ({err.strerror})") from None
    server.daemon_threads = True
    return server


def serve(bank: Bank, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Serve until interrupted, printing the page's URL first (with the real port when 0 was asked)."""
    server = make_server(bank, host, port)
    bound_host, bound_port = server.server_address[:2]
    print(f"SysBank: {len(bank)} prompts at http://{bound_host}:{bound_port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
