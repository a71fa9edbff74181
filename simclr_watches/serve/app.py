"""The HTTP face of a :class:`~simclr_watches.serve.service.CatalogService`: the page and the JSON API.

Routes (docs/SERVE.md):

    GET    /                             the page (static/index.html)
    POST   /api/search                   multipart ``image`` (+ ``k``): the nearest catalog items
    GET    /api/items/{id}               an item's record
    GET    /api/items/{id}/image         its photo;  /thumbnail: a small JPEG of it
    GET    /api/items/{id}/similar?k=    "more like this": the items nearest to it
    POST   /api/items                    add photos (multipart ``image`` fields)       [writes]
    DELETE /api/items/{id}               remove an item                                [writes]
    POST   /api/feedback                 {"query", "item_id", "verdict"}: right/wrong   [writes]
    GET    /api/health, /api/stats

Write routes answer 403 unless the server was started with writes enabled, then 401
without ``Authorization: Bearer TOKEN``. Every error is JSON ``{"error": MESSAGE}``.
Work that decodes or embeds runs in worker threads, so the event loop keeps answering.
"""

from __future__ import annotations

import hmac
import importlib.resources
import logging
import time
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from simclr_watches import __version__
from simclr_watches.core.errors import SimclrWatchesError, one_line
from simclr_watches.serve.errors import ApiError
from simclr_watches.serve.form import read_form
from simclr_watches.serve.service import CatalogService
from simclr_watches.serve.settings import ServeSettings

log = logging.getLogger("simclr_watches.serve")

PAGE = "static/index.html"
DEFAULT_K = 10
IMAGE_FIELD = "image"
# The page's own script and styles are inline; nothing is loaded from elsewhere.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'")


def page_html() -> bytes:
    """The page, read from the installed package (``simclr_watches/serve/static/index.html``)."""
    return importlib.resources.files("simclr_watches.serve").joinpath(PAGE).read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body"))
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid request"


def create_app(index_dir: Path | str, settings: ServeSettings = ServeSettings(), *, checkpoint: str | None = None,
               device: str = "auto") -> FastAPI:
    """A FastAPI app serving ``index_dir``: the model and the index are loaded here, once.

    Args:
        index_dir: an index folder (``build-index``).
        settings: limits, token and switches.
        checkpoint: the model to embed queries with; default: the index's own.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.

    Raises:
        IndexFormatError, CheckpointError: the index or its model cannot be loaded.
    """
    service = CatalogService(index_dir, settings, checkpoint=checkpoint, device=device)
    page = page_html()
    # Reading catalog photos for thumbnails waits its turn rather than being refused: a page asks for many at once.
    # The waiting is in the event loop (a limiter on worker threads), never in a parked worker thread.
    readers = anyio.CapacityLimiter(settings.max_concurrent)
    app = FastAPI(title="simclr-watches", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(SimclrWatchesError)
    async def unavailable(request: Request, exc: SimclrWatchesError) -> JSONResponse:
        # The index on disk became unreadable (deleted, damaged, rebuilt with another model): the server's
        # problem, not the request's; the index loaded before keeps answering once it is back.
        return _error(503, f"the index cannot be read now: {one_line(str(exc))}")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def writer(request: Request) -> None:
        """Lets a request through to a write route only when writes are on and it carries the token."""
        if not settings.enable_writes:
            raise ApiError(403, "writes are disabled on this server (start it with --enable-writes)")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "this needs the server's token: Authorization: Bearer TOKEN")
        if not hmac.compare_digest(given.strip().encode(), settings.token.encode()):
            raise ApiError(401, "wrong token")

    async def upload(request: Request, max_files: int) -> tuple[list[bytes], dict[str, str]]:
        """The photos of a multipart body, read within ``upload_timeout_s`` (a client that trickles: 408)."""
        try:
            with anyio.fail_after(settings.upload_timeout_s):
                form = await read_form(request.headers.get("content-type"), request.headers.get("content-length"),
                                       request.stream(), max_file_bytes=settings.max_upload_bytes, max_files=max_files)
        except TimeoutError:
            raise ApiError(408, f"the photo took more than {settings.upload_timeout_s:g} s to arrive; "
                                "send it again") from None
        files = [data for name, data in form.files if name == IMAGE_FIELD]
        if not files:
            raise ApiError(400, f"no photo: send it as the file field {IMAGE_FIELD!r} of a multipart form")
        return files, form.fields

    async def read_item(fn, *args) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=readers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-cache"})

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return await run_in_threadpool(service.health)

    @app.get("/api/stats")
    async def stats() -> dict[str, Any]:
        return await run_in_threadpool(service.status)

    @app.post("/api/search")
    async def search(request: Request) -> dict[str, Any]:
        started = time.perf_counter()
        with service.gate.admit():
            files, fields = await upload(request, max_files=1)
            k = service.check_k(fields.get("k", request.query_params.get("k", DEFAULT_K)))
            return await run_in_threadpool(service.search_upload, files[0], k, started)

    @app.get("/api/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        record = await run_in_threadpool(service.item, item_id)
        return {**record, "image": f"/api/items/{item_id}/image", "thumbnail": f"/api/items/{item_id}/thumbnail"}

    @app.get("/api/items/{item_id}/image")
    async def item_image(item_id: int) -> Response:
        data, media_type = await read_item(service.image, item_id)
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=60"})

    @app.get("/api/items/{item_id}/thumbnail")
    async def item_thumbnail(item_id: int) -> Response:
        data = await read_item(service.thumbnail, item_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/api/items/{item_id}/similar")
    async def similar(item_id: int, k: str = str(DEFAULT_K)) -> dict[str, Any]:
        started = time.perf_counter()
        k_value = service.check_k(k)  # no photo is held: no place at the gate
        return await run_in_threadpool(service.similar, item_id, k_value, started)

    @app.post("/api/items", dependencies=[Depends(writer)])
    async def add(request: Request) -> JSONResponse:
        with service.gate.admit():
            files, _ = await upload(request, max_files=settings.max_add_files)
            return JSONResponse(await run_in_threadpool(service.add, files), status_code=201)

    @app.delete("/api/items/{item_id}", dependencies=[Depends(writer)])
    async def remove(item_id: int) -> dict[str, Any]:
        return await run_in_threadpool(service.remove, item_id)

    @app.post("/api/feedback", dependencies=[Depends(writer)])
    async def feedback(request: Request) -> JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.max_feedback_bytes:
                raise ApiError(413, f"feedback larger than {settings.max_feedback_bytes} bytes")
        return JSONResponse(await run_in_threadpool(service.record_feedback, bytes(body)), status_code=201)

    return app
