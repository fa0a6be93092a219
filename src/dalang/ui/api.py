"""The dashboard's JSON API: sites, datasets, queries, jobs, training (with live events), audit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from dalang.errors import DalangError
from dalang.federation.audit import entry_hash
from dalang.ui import pipeline as pipeline_spec
from dalang.ui.auth import COOKIE, TokenAuth
from dalang.ui.state import STRATEGIES, TRAINERS, DashboardState, json_value

#: How often the live training stream looks for new rounds (seconds).
EVENT_POLL_S = 0.1
#: Seconds a request with a wrong token or session waits before its 401.
FAILED_AUTH_DELAY_S = 0.25


def error_response(error: BaseException, *, status: int = 400) -> JSONResponse:
    """A dalang error as JSON: its kind, message and, for federation errors, site/dataset."""
    doc: dict[str, Any] = {"error": type(error).__name__, "message": str(error)}
    for key in ("site", "dataset", "policy"):
        value = getattr(error, key, None)
        if value is not None:
            doc[key] = value
    return JSONResponse(doc, status_code=status)


def _status_of(error: DalangError) -> int:
    from dalang.errors import PolicyViolation, SiteUnavailable

    if isinstance(error, PolicyViolation):
        return 403
    if isinstance(error, SiteUnavailable):
        return 503
    return 400


def make_router(state: DashboardState, auth: TokenAuth) -> APIRouter:
    """The routes under ``/api``; all but login need the token or the session cookie."""

    def require_auth(request: Request) -> None:
        authorization = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        if not auth.allowed(authorization=authorization, cookie=cookie):
            if authorization is not None or cookie is not None:
                time.sleep(FAILED_AUTH_DELAY_S)  # guessing tokens stays slow
            raise HTTPException(status_code=401, detail="log in with the dashboard token")

    public = APIRouter(prefix="/api")
    api = APIRouter(prefix="/api", dependencies=[Depends(require_auth)])

    @public.post("/login")
    def login(response: Response, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        token = body.get("token")
        if not isinstance(token, str) or not auth.token_ok(token):
            time.sleep(FAILED_AUTH_DELAY_S)
            raise HTTPException(status_code=401, detail="wrong token")
        response.set_cookie(COOKIE, auth.session, httponly=True, samesite="strict")
        return {"ok": True}

    @public.post("/logout")
    def logout(response: Response) -> dict[str, Any]:
        response.delete_cookie(COOKIE)
        return {"ok": True}

    @api.get("/session")
    def session() -> dict[str, Any]:
        fed = state.federation
        return {
            "sites": fed.sites + list(fed.unreachable),
            "trainers": list(TRAINERS),
            "strategies": list(STRATEGIES),
            "operators": list(pipeline_spec.OPERATORS),
            "aggregates": list(pipeline_spec.AGGREGATES),
        }

    @api.get("/sites")
    def sites() -> list[dict[str, Any]]:
        return state.sites()

    @api.get("/datasets")
    def datasets() -> list[dict[str, Any]]:
        return state.datasets()

    @api.post("/query", response_model=None)
    def query(body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        allow_partial = bool(body.get("allow_partial", False))
        try:
            if "pipeline" in body:
                spec = pipeline_spec.parse(body["pipeline"])
                code = pipeline_spec.python_code(spec)
                title = f"pipeline: {spec.dataset}"
                if spec.join is not None:
                    title += f" join {spec.join}"
                if spec.group_by:
                    title += f" by {', '.join(spec.group_by)}"
                return state.run_query(
                    title,
                    lambda: pipeline_spec.build(state.federation, spec),
                    python=code,
                )
            sql = body.get("sql")
            if not isinstance(sql, str) or not sql.strip():
                return JSONResponse(
                    {"error": "PlanError", "message": "give sql (text) or pipeline (object)"},
                    status_code=400,
                )
            tables = state.sql_tables(allow_partial=allow_partial)
            title = " ".join(sql.split())[:120]
            return state.run_query(title, lambda: state.federation.context.sql(sql, **tables))
        except DalangError as e:
            return error_response(e, status=_status_of(e))

    @api.post("/pipeline/code", response_model=None)
    def pipeline_code(body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        try:
            spec = pipeline_spec.parse(body.get("pipeline", {}))
        except DalangError as e:
            return error_response(e)
        return {"python": pipeline_spec.python_code(spec)}

    @api.get("/jobs")
    def jobs() -> list[dict[str, Any]]:
        return [j.to_json() for j in reversed(state.jobs)]

    @api.post("/training", response_model=None)
    def start_training(body: dict[str, Any] = Body(...)) -> Any:  # noqa: B008
        try:
            run = state.start_training(body)
        except DalangError as e:
            return error_response(e)
        return run.to_json()

    @api.get("/training")
    def training_runs() -> list[dict[str, Any]]:
        return [r.to_json() for r in reversed(state.runs.values())]

    @api.get("/training/{run_id}")
    def training_run(run_id: str) -> dict[str, Any]:
        run = state.runs.get(run_id)
        if run is None:
            raise HTTPException(status_code=404, detail=f"no training run {run_id!r}")
        return run.to_json()

    @api.get("/training/{run_id}/events")
    async def training_events(run_id: str, request: Request) -> StreamingResponse:
        run = state.runs.get(run_id)
        if run is None:
            raise HTTPException(status_code=404, detail=f"no training run {run_id!r}")

        async def events() -> AsyncIterator[str]:
            sent = 0
            while True:
                rounds, status = list(run.rounds), run.status
                for record in rounds[sent:]:
                    yield f"event: round\nid: {record['round']}\ndata: {json.dumps(record)}\n\n"
                sent = len(rounds)
                if status != "running":
                    done = {"status": status, "error": run.error, "run_id": run.run_id}
                    yield f"event: done\ndata: {json.dumps(done)}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    @api.get("/audit")
    def audit(limit: int = 200) -> list[dict[str, Any]]:
        logs = state.audit_logs(limit=max(1, min(limit, 5000)))
        return [
            log if "error" in log else {**log, "checked_here": check_entries(log["entries"])}
            for log in logs
        ]

    app_router = APIRouter()
    app_router.include_router(public)
    app_router.include_router(api)
    return app_router


def check_entries(entries: list[Any]) -> dict[str, Any]:
    """What the coordinator can check itself: each entry's hash, and the links between
    consecutive entries (a site sharing only some entries leaves gaps, not breaks)."""
    bad_hash: list[Any] = []
    broken_links: list[Any] = []
    previous: dict[str, Any] | None = None
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("hash") != entry_hash(entry):
            bad_hash.append(entry.get("seq") if isinstance(entry, dict) else None)
            previous = None
            continue
        if (
            previous is not None
            and entry.get("seq") == previous.get("seq", 0) + 1
            and entry.get("prev") != previous.get("hash")
        ):
            broken_links.append(entry.get("seq"))
        previous = entry
    return {
        "ok": not bad_hash and not broken_links,
        "entries": len(entries),
        "bad_hash": json_value(bad_hash),
        "broken_links": json_value(broken_links),
    }
