"""The web application of ``psgvlm serve`` and the uvicorn server that runs it.

:func:`create_app` puts the JSON API (:mod:`vlm.serve.api`), the page
(``static/index.html`` with its script and style) and the vendored charting library
(uPlot, ``static/vendor/uplot``: nothing is fetched from elsewhere at run time) into one
FastAPI application. :func:`run_server` serves it on a socket bound before uvicorn starts,
so port 0 (a free port) has a known URL to print; :class:`ServerThread` does the same in
a background thread (tests, notebooks).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .api import router
from .library import Library

__all__ = ["STATIC", "create_app", "bind", "url_of", "run_server", "ServerThread"]

#: The page, its script and style, and the vendored uPlot.
STATIC = Path(__file__).resolve().parent / "static"


def create_app(library: Library, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The application serving ``library``.

    Parameters
    ----------
    library : Library
    allowed_hosts : sequence of str, optional
        Host names requests may carry (a page on another site that resolves its name to
        127.0.0.1 is refused); None accepts any.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        library.start()  # opening and staging, in the background
        yield
        library.stop(timeout=5.0)

    app = FastAPI(
        title="psgvlm serve",
        summary="Review a night: staging, questions, explanations, corrections",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # Swagger and ReDoc pages load from a CDN; /openapi.json stays
        redoc_url=None,
    )
    app.state.library = library
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def same_origin_writes(request: Request, call_next: Callable):
        """Writes only from the page itself: a request another site's page makes carries
        its own Origin, and is refused."""
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin:
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                return JSONResponse({"detail": f"cross-origin request from {origin} refused"},
                                    status_code=403)  # fmt: skip
        return await call_next(request)

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one): connections made
    before the server runs wait in its backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _server(app: FastAPI):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))


def run_server(app: FastAPI, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until interrupted (Ctrl+C)."""
    _server(app).run(sockets=[sock])


class ServerThread:
    """``app`` served in a background thread on a free port of 127.0.0.1.

    Examples
    --------
    >>> with ServerThread(app) as url:  # doctest: +SKIP
    ...     requests.get(url + "api/recordings")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = _server(app)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="psgvlm-serve", daemon=True)  # fmt: skip

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
