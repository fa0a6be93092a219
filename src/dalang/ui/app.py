"""The dashboard's web app (FastAPI) and a uvicorn server that runs it in a thread."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from dalang.errors import DalangError
from dalang.ui.api import error_response, make_router
from dalang.ui.auth import TokenAuth
from dalang.ui.state import DashboardState

log = logging.getLogger("dalang.ui")

#: The front end: plain HTML, one ES module, one stylesheet and a vendored Chart.js.
STATIC = Path(__file__).with_name("static")
#: The page's content security policy: scripts, styles and data from this server only.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)


def create_app(state: DashboardState, *, token: str) -> FastAPI:
    """The app: ``/`` (the page), ``/static/*`` and the token-protected ``/api/*``."""
    auth = TokenAuth(token)
    app = FastAPI(title="dalang dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(make_router(state, auth))

    @app.middleware("http")
    async def security_headers(request: Any, call_next: Any) -> Any:
        try:
            response = await call_next(request)
        except Exception as exc:  # a bug: logged, and the page is told in JSON
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            response = JSONResponse(
                {"error": type(exc).__name__, "message": "unexpected error in the dashboard"},
                status_code=500,
            )
        # everything the page needs comes from this server; nothing may frame it
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(DalangError)
    async def dalang_error(request: Any, exc: DalangError) -> Any:
        return error_response(exc)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        # the page itself holds no data; it asks for the token before calling the API
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class DashboardServer:
    """uvicorn serving the dashboard from a background thread (``port=0``: a free one).

    Examples
    --------
    >>> server = DashboardServer(DashboardState(fed), token="secret-token")  # doctest: +SKIP
    >>> server.start()  # doctest: +SKIP
    'http://127.0.0.1:40211'
    >>> server.stop()  # doctest: +SKIP
    """

    def __init__(
        self, state: DashboardState, *, token: str, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        import uvicorn

        self.state = state
        config = uvicorn.Config(
            create_app(state, token=token),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # requests are not logged: no query text or tokens in logs
            timeout_graceful_shutdown=2,
            lifespan="off",
            ws="none",  # live updates use server-sent events
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.url: str | None = None

    def start(self, *, timeout: float = 20.0) -> str:
        """Start serving; returns the base URL once the socket listens."""
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="dalang-ui")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start (is the port taken?)")
            time.sleep(0.02)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def wait(self) -> None:
        """Block until the server stops."""
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        """Stop serving and close the federation if the dashboard started it."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.state.close()
