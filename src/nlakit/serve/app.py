"""The HTTP side of `nlakit serve`: a FastAPI app around a `Viewer`, plus the static page.

    app = create_app({"a": Model(nla, target)})      # already-loaded objects: tests pass tiny ones
    uvicorn.run(app, host="127.0.0.1", port=8000)

Safety: requests name models only by their short name and carry text, never a path; sizes over `Limits` get 413,
malformed bodies 422 with the field named (one line in ``detail``), library errors (a sink position, an unknown
model) 422 with the library's message. Each model runs one request at a time; up to `Limits.queue` more wait, and
beyond that the answer is 503 with Retry-After. The JSON API is documented at /docs (OpenAPI).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from nlakit.errors import NlakitError
from nlakit.serve.viewer import Limits, Model, TooLarge, Viewer

STATIC = Path(__file__).parent / "static"


class Busy(Exception):
    pass


class ModelQueue:
    """One request at a time on a model; at most `size` more wait; beyond that `Busy` (HTTP 503)."""

    def __init__(self, size: int):
        self._admit = threading.BoundedSemaphore(size + 1)
        self._run = threading.Lock()
        self.size = size

    @contextmanager
    def slot(self):
        if not self._admit.acquire(blocking=False):
            raise Busy
        try:
            with self._run:
                yield
        finally:
            self._admit.release()

    def reserve(self) -> None:
        """Take a queue place now (or raise `Busy`); `run_reserved` uses it later (background jobs)."""
        if not self._admit.acquire(blocking=False):
            raise Busy

    def run_reserved(self, fn):
        try:
            with self._run:
                return fn()
        finally:
            self._admit.release()


# ---- request bodies ----------------------------------------------------------------------------------------
class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class TokenizeIn(BaseModel):
    text: str | None = Field(None, description="Raw text (no chat template).")
    messages: list[Message] | None = Field(None, description="A chat, rendered with the target's chat template.")
    model: str = "a"


class ExplainIn(BaseModel):
    text: str = Field(..., description="The text, as returned by /api/tokenize (a rendered chat is plain text).")
    pos: int = Field(..., description="Token index (negative counts from the end).")
    model: str = "a"


class CompareIn(BaseModel):
    text: str
    pos: int = Field(..., description="Token index in the first model's tokenization; the others explain the token "
                                      "covering the same last character.")
    models: list[str] = Field(default_factory=lambda: ["a", "b"], min_length=1, max_length=4)


class HeatmapIn(BaseModel):
    text: str
    model: str = "a"


class ExportIn(BaseModel):
    text: str
    positions: list[int] = Field(..., description="Token indices to export (the ones explained on screen).")
    model: str = "a"


def _field(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def create_app(models: dict[str, Model] | Viewer, limits: Limits | None = None) -> FastAPI:
    """The viewer app over already-loaded models ({"a": Model(nla, target), "b": …}) or a ready `Viewer`."""
    viewer = models if isinstance(models, Viewer) else Viewer(models, limits or Limits())
    queues = {name: ModelQueue(viewer.limits.queue) for name in viewer.models}
    jobs: OrderedDict[str, dict] = OrderedDict()
    jobs_lock = threading.Lock()
    job_ids = itertools.count(1)

    app = FastAPI(title="nlakit serve", description="Explain any token of a text with an NLA, and check the explanation.",
                  version="1")
    app.state.viewer, app.state.queues, app.state.jobs = viewer, queues, jobs

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_request: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        if err.get("type") == "json_invalid":
            return JSONResponse({"detail": "the request body is not valid JSON"}, status_code=422)
        return JSONResponse({"detail": f"field {_field(err['loc'])!r}: {err['msg']}"}, status_code=422)

    @app.exception_handler(TooLarge)
    async def _too_large(_request: Request, exc: TooLarge):
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(NlakitError)
    async def _nlakit(_request: Request, exc: NlakitError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Busy)
    async def _busy(_request: Request, _exc: Busy):
        return JSONResponse({"detail": f"the model is busy (a queue of {viewer.limits.queue} requests is full); retry shortly"},
                            status_code=503, headers={"Retry-After": "2"})

    def queue(name: str) -> ModelQueue:
        viewer.model(name)  # unknown name -> 422 naming the known ones
        return queues[name]

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info")
    def info() -> dict:
        """The loaded models and the server's limits."""
        return {"models": [m.info(name) for name, m in viewer.models.items()], "limits": asdict(viewer.limits)}

    @app.post("/api/tokenize")
    def tokenize(body: TokenizeIn) -> dict:
        """Text (or a chat, rendered with the chat template) as tokens; sinks are flagged and cannot be explained."""
        if (body.text is None) == (body.messages is None):
            raise HTTPException(422, "give exactly one of the fields 'text' and 'messages'")
        with queue(body.model).slot():
            text = body.text if body.messages is None else viewer.render_chat(body.model, [m.model_dump() for m in body.messages])
            return viewer.tokens(body.model, text)

    @app.post("/api/explain")
    def explain(body: ExplainIn) -> dict:
        """One token: explanation, fve_nrm and cos beside the baselines, quote checks, line salience."""
        viewer.check_text(body.text)
        with queue(body.model).slot():
            return viewer.explain(body.model, body.text, body.pos)

    @app.post("/api/compare")
    def compare(body: CompareIn) -> dict:
        """The same token explained by several models, side by side."""
        viewer.check_text(body.text)
        first, *rest = body.models
        for name in rest:
            viewer.model(name)  # an unknown name fails before any work
        with queue(first).slot():
            panels = [viewer.explain(first, body.text, body.pos)]
        same = {id(viewer.model(first).target.tokenizer)}
        for name in rest:
            with queue(name).slot():  # tokenizers are used under their model's queue only
                pos = panels[0]["pos"] if id(viewer.model(name).target.tokenizer) in same else \
                    viewer.token_at(name, body.text, panels[0]["token"]["end"])
                panels.append(viewer.explain(name, body.text, pos))
        return {"panels": panels}

    @app.post("/api/heatmap", status_code=202)
    def heatmap(body: HeatmapIn) -> dict:
        """Start explaining every token (one engine batch); poll /api/jobs/{job} for progress and the result."""
        q = queue(body.model)
        with q.slot():  # tokenizers are used under their model's queue only
            viewer.check_positions(body.model, body.text)
        q.reserve()
        job_id = str(next(job_ids))
        job = {"job": job_id, "state": "queued", "done": 0, "total": None, "result": None, "error": None, "status": None}
        with jobs_lock:
            jobs[job_id] = job
            finished = [k for k, j in jobs.items() if j["state"] in ("done", "error")]
            for k in finished[: max(0, len(jobs) - viewer.limits.jobs)]:
                del jobs[k]

        def progress(done: int, total: int) -> None:
            job.update(state="running", done=done, total=total)

        def work():
            try:
                job["result"] = q.run_reserved(lambda: viewer.heatmap(body.model, body.text, progress))
                job["state"] = "done"
            except NlakitError as e:
                job.update(state="error", error=str(e), status=413 if isinstance(e, TooLarge) else 422)
            except Exception as e:  # noqa: BLE001 - reported to the client, the server keeps running
                job.update(state="error", error=f"{type(e).__name__}: {e}", status=500)

        threading.Thread(target=work, name=f"heatmap-{job_id}", daemon=True).start()
        return {"job": job_id}

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        """A heatmap job: state (queued, running, done, error), done/total tokens, and the result when done."""
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for a while, then dropped)")
        return dict(job)

    @app.post("/api/export")
    def export(body: ExportIn):
        """The explained tokens as an `explain` results JSON; `nlakit report FILE --out page.html` renders it."""
        viewer.check_text(body.text)
        with queue(body.model).slot():
            res = viewer.export(body.model, body.text, body.positions)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return JSONResponse(res, headers={"Content-Disposition": f'attachment; filename="nlakit-explain-{stamp}.json"'})

    return app
