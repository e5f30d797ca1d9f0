"""A local web page over a loaded SysBank: search, filter and read prompts, constraints highlighted.

FastAPI on uvicorn: a JSON API under /api/ and a static page from `sysbank/web/` with no external
resources, so it works offline. It binds 127.0.0.1 unless told otherwise. Nothing runs on the event
loop: the small handlers run in FastAPI's thread pool, and searches in threads of their own, one per
CPU at a time (more would only slow each one down and run them into their deadline). Regular
expressions that can backtrack without end run one at a time in a lane of their own, so however
many of them wait for their deadline, plain searches and ordinary patterns are never queued behind
them; a regular-expression search releases the GIL and is stopped at its deadline.
"""

from __future__ import annotations

import mimetypes
import os
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import uvicorn
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from rpo.utils.io import InputError
from starlette.exceptions import HTTPException

from sysbank.bank import LANGUAGES, REGEX_TIMEOUT_S, Bank, FilterError, Filters, backtracking_shape
from sysbank.loader import normalised_dict
from sysbank.ontology import CATEGORIES, OTHER

WEB_DIR = Path(__file__).resolve().parent / "web"
STATIC_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
MAX_PAGE = 200
# Connections the kernel queues while every worker is busy: a page burst or a load test must not be refused.
LISTEN_BACKLOG = 2048
NO_STORE = {"Cache-Control": "no-store"}
GRACEFUL_SHUTDOWN_S = 2


def _int_param(query: Mapping[str, str], name: str, low: int = 0, high: int | None = None) -> int | None:
    value = query.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        expected = f"a whole number from {low} to {high}" if high is not None else f"a whole number >= {low}"
        raise InputError(f"parameter {name}: expected {expected}, got {value!r}")
    return number


def _text_param(query: Mapping[str, str], name: str) -> str | None:
    return query.get(name, "").strip() or None


def _flag_param(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "").strip().lower()
    if value in {"", "0", "false", "off"}:
        return False
    if value in {"1", "true", "on"}:
        return True
    raise InputError(f"parameter {name}: expected 1 or 0, got {value!r}")


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
    """A full record (the normalised fields) plus what the page highlights: language and ontology tags."""
    return {
        **normalised_dict(bank.profiles[i]),
        "language": bank.languages[i],
        "constraint_categories": bank.constraint_categories[i],
        "location": str(bank.locations[i]),
    }


PAGE_NAMES = {"language": "language", "category": "constraint kind", "min_constraints": "min constraints",
              "max_constraints": "max constraints"}
"""A filter as the page labels it, for refusals the page shows."""


def search_api(bank: Bank, query: Mapping[str, str], regex_timeout_s: float = REGEX_TIMEOUT_S) -> dict[str, Any]:
    """`/api/search?q=&regex=1&source=&language=&category=&min=&max=&offset=&limit=`."""
    try:
        filters = Filters(
            source=_text_param(query, "source"),
            language=_text_param(query, "language"),
            category=_text_param(query, "category"),
            min_constraints=_int_param(query, "min"),
            max_constraints=_int_param(query, "max"),
        )
    except FilterError as err:
        raise InputError(f"{PAGE_NAMES.get(err.field, err.field)}: {err.reason}") from None
    offset = _int_param(query, "offset") or 0
    limit = _int_param(query, "limit", low=1, high=MAX_PAGE) or 50
    text = query.get("q", "")
    regex = _flag_param(query, "regex")
    hits = bank.search(text, regex=regex, filters=filters, timeout_s=regex_timeout_s) if text else bank.select(filters)
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


def _json(obj: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers=NO_STORE)


def create_app(bank: Bank, regex_timeout_s: float = REGEX_TIMEOUT_S) -> FastAPI:
    """The web app over one bank. Bad parameters answer 400, an unknown id or page 404, each `{"error": ...}`."""
    app = FastAPI(title="SysBank", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, err: InputError) -> JSONResponse:
        return _json({"error": str(err)}, 400)

    @app.exception_handler(HTTPException)
    async def no_such_page(request: Request, err: HTTPException) -> JSONResponse:
        message = f"no such page: {request.url.path}" if err.status_code == 404 else str(err.detail)
        return _json({"error": message}, err.status_code)

    @app.get("/api/meta")
    def meta() -> JSONResponse:
        return _json(meta_api(bank))

    @app.get("/api/stats")
    def stats() -> JSONResponse:
        return _json(bank.stats())

    searches = CapacityLimiter(len(os.sched_getaffinity(0)))
    backtracking_searches = CapacityLimiter(1)

    @app.get("/api/search")
    async def search(request: Request) -> JSONResponse:
        query = request.query_params
        risky = _flag_param(query, "regex") and backtracking_shape(query.get("q", "")) is not None
        lane = backtracking_searches if risky else searches
        answer = await to_thread.run_sync(search_api, bank, query, regex_timeout_s, limiter=lane)
        return _json(answer)

    @app.get("/api/profile")
    def profile(request: Request) -> JSONResponse:
        try:
            i = bank.get(request.query_params.get("id", ""))
        except InputError as err:
            return _json({"error": str(err)}, 404)
        return _json(detail(bank, i))

    for route, name in STATIC_FILES.items():
        body = (WEB_DIR / name).read_bytes()
        media_type = f"{mimetypes.guess_type(name)[0] or 'application/octet-stream'}; charset=utf-8"
        app.add_api_route(route, _static_page(body, media_type), methods=["GET"], include_in_schema=False)
    return app


def _static_page(body: bytes, media_type: str) -> Any:
    async def page() -> Response:
        return Response(body, media_type=media_type, headers=NO_STORE)

    return page


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A listening socket with a real backlog; port 0 picks a free port (see `getsockname()`)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise InputError(f"--host: cannot use {host!r} ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise InputError(f"--port: cannot listen on {host}:{port} ({err.strerror})") from None
    return sock


def serve(bank: Bank, host: str = "127.0.0.1", port: int = 8765, regex_timeout_s: float = REGEX_TIMEOUT_S) -> None:
    """Serve until interrupted, printing the page's URL first (with the real port when 0 was asked)."""
    sock = listen(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    config = uvicorn.Config(create_app(bank, regex_timeout_s), log_level="warning", access_log=False,
                            backlog=LISTEN_BACKLOG, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    print(f"SysBank: {len(bank)} prompts at http://{shown_host}:{bound_port}/  (Ctrl-C to stop)", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn has already shut down; it hands the Ctrl-C on once it has
    finally:
        sock.close()
    print("stopped", file=sys.stderr)
