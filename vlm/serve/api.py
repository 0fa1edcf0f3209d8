"""The JSON API the page uses (and scripts may): routes of ``psgvlm serve``.

Recordings are named by their id (``GET /api/recordings`` lists them); nothing in a URL
is ever read as a path. Malformed requests get a 4xx with a ``detail`` saying why: 404 for
a recording or epoch that does not exist, 409 for a recording that is still opening or
could not be opened, 422 for a body or parameter that does not validate. Slow work
(questions, explanations) answers 202 with a job to poll. docs/serve.md lists every
route with examples.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from engine.errors import PSGError

from . import views
from .edits import CLIENT_PATTERN, EditConflict
from .library import Library
from .night import Night

__all__ = ["router", "library_of"]

router = APIRouter(prefix="/api")

_RID = PathParam(pattern=r"^[A-Za-z0-9._-]{1,200}$", description="recording id")
_EPOCH = PathParam(description="epoch number, from 0")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Question(_Body):
    question: str = Field(min_length=1, max_length=500)


class ExplainRequest(_Body):
    method: Literal["occlusion", "gradxinput"] = "occlusion"
    window_s: float = Field(3.0, ge=1.0, le=30.0)


class EditRequest(_Body):
    epoch: int = Field(ge=0)
    stage: str = Field(min_length=1, max_length=20)
    client: str = Field("api", pattern=CLIENT_PATTERN)


class UndoRequest(_Body):
    client: str = Field("api", pattern=CLIENT_PATTERN)


def library_of(request: Request) -> Library:
    return request.app.state.library


def _night(request: Request, rid: str, opened: bool = True) -> Night:
    library = library_of(request)
    night = library.get(rid)
    if night is None:
        known = ", ".join(library.nights)
        raise HTTPException(404, f"no recording {rid!r}; this server has: {known}")
    if opened and not night.opened:
        if night.status == "error":
            raise HTTPException(409, night.error or "the recording could not be opened")
        raise HTTPException(409, f"{night.entry.name} is still {night.status}; try again shortly",
                            headers={"Retry-After": "1"})  # fmt: skip
    return night


def _epoch(night: Night, index: int) -> int:
    try:
        return night.check_epoch(index)
    except PSGError as err:
        raise HTTPException(404, str(err)) from None


# -- recordings ------------------------------------------------------------------------------
@router.get("/recordings")
def list_recordings(request: Request) -> list[dict[str, Any]]:
    library = library_of(request)
    return [views.summary(n, library.low_confidence) for n in library.nights.values()]


@router.get("/recordings/{rid}")
def recording(request: Request, rid: str = _RID) -> dict[str, Any]:
    night = _night(request, rid, opened=False)
    library_of(request).focus(rid)
    return views.summary(night, library_of(request).low_confidence)


@router.get("/recordings/{rid}/hypnogram")
def hypnogram(request: Request, rid: str = _RID) -> dict[str, Any]:
    return views.hypnogram(_night(request, rid))


@router.get("/recordings/{rid}/statistics")
def statistics(request: Request, rid: str = _RID) -> dict[str, Any]:
    return views.statistics(_night(request, rid))


# -- one epoch ---------------------------------------------------------------------------------
@router.get("/recordings/{rid}/epochs/{index}")
def epoch(request: Request, rid: str = _RID, index: int = _EPOCH) -> dict[str, Any]:
    night = _night(request, rid)
    return views.epoch_info(night, _epoch(night, index))


@router.get("/recordings/{rid}/epochs/{index}/traces")
def traces(request: Request, rid: str = _RID, index: int = _EPOCH,
           context: int = Query(1, ge=0, le=5)) -> dict[str, Any]:  # fmt: skip
    night = _night(request, rid)
    return views.traces(night, _epoch(night, index), context)


@router.get("/recordings/{rid}/epochs/{index}/image.png")
def image(request: Request, rid: str = _RID, index: int = _EPOCH) -> Response:
    night = _night(request, rid)
    pixels, picture = night.image(_epoch(night, index))
    return Response(views.png(picture), media_type="image/png",
                    headers={"Cache-Control": "max-age=3600"})  # fmt: skip


@router.post("/recordings/{rid}/epochs/{index}/ask", status_code=202)
def ask(body: Question, request: Request, rid: str = _RID, index: int = _EPOCH) -> dict:
    night = _night(request, rid)
    index = _epoch(night, index)

    def work(job) -> dict[str, Any]:
        answer, features = night.ask(index, body.question)
        result = answer.to_dict()
        result.pop("image_path", None)
        marked = result.pop("marked_image_path", None)
        if marked:
            with open(marked, "rb") as handle:
                job.image = handle.read()
            result["image_url"] = f"/api/jobs/{job.id}/image.png"
        result["events"] = views.cited_events(night, answer, features)
        return views.clean(result)

    return library_of(request).jobs.submit("ask", rid, index, work).to_dict()


@router.post("/recordings/{rid}/epochs/{index}/explain", status_code=202)
def explain(request: Request, body: ExplainRequest | None = None, rid: str = _RID,
            index: int = _EPOCH) -> dict:  # fmt: skip
    night = _night(request, rid)
    index = _epoch(night, index)
    body = body or ExplainRequest()

    def work(job) -> dict[str, Any]:
        pixels, attribution, sentence = night.explain(index, body.method, body.window_s)
        job.image = views.overlay_png(pixels, attribution)
        return views.clean({**attribution.to_dict(), "where": sentence,
                            "image_url": f"/api/jobs/{job.id}/image.png"})  # fmt: skip

    return library_of(request).jobs.submit("explain", rid, index, work).to_dict()


# -- jobs -----------------------------------------------------------------------------------------
def _job(request: Request, job_id: str):
    job = library_of(request).jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for a while)")
    return job


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str = PathParam(pattern=r"^[a-z]+-\d+$")) -> dict:
    return _job(request, job_id).to_dict()


@router.get("/jobs/{job_id}/image.png")
def job_image(request: Request, job_id: str = PathParam(pattern=r"^[a-z]+-\d+$")) -> Response:
    found = _job(request, job_id)
    if found.image is None:
        raise HTTPException(404, f"job {job_id} has no image ({found.status})")
    return Response(found.image, media_type="image/png")


# -- corrections ------------------------------------------------------------------------------
@router.get("/recordings/{rid}/edits")
def edits(request: Request, rid: str = _RID, since: int = Query(0, ge=0)) -> dict[str, Any]:
    night = _night(request, rid)
    log = night.edits
    return {"seq": log.seq, "entries": log.since(since), "stages": {
        str(k): v for k, v in sorted(log.stages.items())}}  # fmt: skip


@router.post("/recordings/{rid}/edits")
def edit(body: EditRequest, request: Request, rid: str = _RID) -> dict[str, Any]:
    night = _night(request, rid)
    index = _epoch(night, body.epoch)
    try:
        entry = night.edits.set(index, body.stage, body.client)
    except PSGError as err:
        raise HTTPException(422, str(err)) from None
    return {"entry": entry, "epoch": views.epoch_info(night, index)}


@router.post("/recordings/{rid}/undo")
def undo(request: Request, body: UndoRequest | None = None, rid: str = _RID) -> dict[str, Any]:
    night = _night(request, rid)
    try:
        entry = night.edits.undo((body or UndoRequest()).client)
    except EditConflict as err:
        raise HTTPException(409, str(err)) from None
    info = views.epoch_info(night, int(entry["epoch"])) if entry else None
    return {"entry": entry, "epoch": info}


@router.get("/recordings/{rid}/export.{kind}")
def export(request: Request, rid: str = _RID,
           kind: Literal["csv", "edf"] = PathParam(description="csv or edf")) -> FileResponse:  # fmt: skip
    from vlm.hypno import write_edf_annotations, write_stage_csv

    night = _night(request, rid)
    hyp = night.source.hypnogram
    with night.lock:
        stages = night.stages()
        probabilities = night.probabilities.copy()
    night.out.mkdir(parents=True, exist_ok=True)
    path = night.out / f"{night.rid}-edited.{kind}"
    tmp = path.with_name(f".{path.name}.tmp")
    if kind == "csv":
        write_stage_csv(tmp, hyp.onsets, hyp.durations, stages, probabilities)
    else:
        write_edf_annotations(tmp, hyp.onsets, hyp.durations, stages, night.source.start_time)
    tmp.replace(path)
    media = "text/csv" if kind == "csv" else "application/octet-stream"
    return FileResponse(path, media_type=media, filename=path.name)


@router.get("/")
def index(request: Request) -> JSONResponse:
    """The routes, for a script that starts here."""
    routes = sorted({f"{m} {r.path}" for r in router.routes for m in getattr(r, "methods", ())})
    return JSONResponse({"routes": routes, "openapi": "/openapi.json"})
