"""The HTTP API and web page of the job service (FastAPI; served by uvicorn).

Routes read like Ray Jobs': submit, list, get, result, artifacts, logs, events (server-sent),
stop, delete; OpenAPI at ``/docs``.  Job records live in the store (SQLAlchemy), files under
``data/jobs/<id>/``, and the jobs themselves run on Ray (:mod:`.manager`).  A bad option is a
422 with the command line's own one-line message.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..errors import ArgumentError, ShapesearchError
from ..jobs.arrays import check_no_key, check_npy_header, chosen_tensor, tensor_names
from ..jobs.images import check_image_header
from ..paths import check_writable_dir
from .driver import INPUT, LOG, OUT
from .manager import Manager
from .specs import OPTIONS, SCHEDULING, check_params, compress_configs, layers_request
from .store import FINISHED, STATES, JobRecord, Store

STATIC = Path(__file__).parent / "static"
ARRAY_SUFFIXES = (".npy", ".safetensors")  # what `shapesearch tensor` reads; `image` reads what Pillow reads
# what a finished job's result is, by kind
RESULT_FILES = {"image": "result.json", "tensor": "result.json", "layers": "plan.json", "compress": "report.json"}


@dataclass
class Settings:
    """How the service runs; ``max_upload`` in bytes, ``inputs``: the directory under which jobs
    may read server-side paths (None: uploads only)."""

    data: Path
    db: str | None = None  # SQLAlchemy URL; default: a SQLite file in ``data``
    address: str | None = None
    host: str = "127.0.0.1"
    token: str | None = None
    max_upload: int = 256 << 20
    max_running: int = 16
    inputs: Path | None = None

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        check_writable_dir(self.data, "data")
        if self.db is None:
            self.db = f"sqlite:///{(self.data / 'jobs.db').absolute()}"
        if not is_loopback(self.host) and not self.token:
            raise ArgumentError("token", f"is required to serve on {self.host}, which is not a loopback address; "
                                         "set one (or serve on 127.0.0.1)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _problem(exc: ShapesearchError, kind: str) -> HTTPException:
    """The command line's one-line message, as a 422."""
    flags = set(OPTIONS.get(kind, {})) | set(SCHEDULING)
    return HTTPException(422, exc.for_command_line(flags))


def create_app(settings: Settings) -> FastAPI:
    """The service: API, events and page, with its store and job manager started in the lifespan."""
    created = not settings.data.exists()
    settings.data.mkdir(parents=True, exist_ok=True)  # (the default store is a file in it)
    try:
        store = Store(settings.db)
    except ShapesearchError:
        if created:  # a refused start leaves nothing behind
            shutil.rmtree(settings.data, ignore_errors=True)
        raise
    manager = Manager(store, settings.db, settings.data, settings.address, settings.max_running)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        yield
        manager.close()
        store.close()

    def authorized(request: Request) -> None:
        if not settings.token:
            return
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (RFC 9110); a bare token is not a scheme
            given = ""
        given = given.strip() or request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise HTTPException(401, "a valid token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)")

    app = FastAPI(title="shapesearch", description="TT-shape search jobs on Ray", lifespan=lifespan,
                  dependencies=[Depends(authorized)])
    app.state.store, app.state.manager = store, manager

    def record(job_id: str) -> JobRecord:
        job = store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    def view(job: JobRecord) -> dict:
        return {**job.to_dict(), "artifacts": artifacts(job.id)}

    def artifacts(job_id: str) -> list[str]:
        root = manager.job_dir(job_id)
        if not root.is_dir():
            return []
        found = [p for p in root.rglob("*") if p.is_file() and not _internal(p)]
        return sorted(str(p.relative_to(root)) if p.parent != root / OUT else p.name for p in found)

    def artifact_path(job_id: str, name: str) -> Path:
        """``name`` inside the job's directory (or its out/), never outside it."""
        root = manager.job_dir(job_id).resolve()
        for base in (root / OUT, root):
            try:
                path = (base / name).resolve()
                if path.is_relative_to(root) and path.is_file() and not _internal(path):
                    return path
            except (ValueError, OSError):  # a NUL byte, a name too long for the file system
                break
        raise HTTPException(404, f"job {job_id} has no artifact {name!r}")

    @app.post("/api/jobs/{kind}", status_code=201, summary="Submit a job (multipart: params JSON + file, or JSON)")
    async def submit(kind: str, request: Request) -> dict:
        size = int(request.headers.get("content-length") or 0)
        if size > settings.max_upload:
            raise HTTPException(413, f"the request is {size:,} bytes; this server takes at most "
                                     f"{settings.max_upload:,}")
        upload = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_part_size=settings.max_upload)
            raw, upload = form.get("params") or "{}", form.get("file")
            if not isinstance(raw, str):
                raise HTTPException(422, "params must be a form field holding a JSON object, not a file")
            try:
                params = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise HTTPException(422, f"params must be a JSON object ({type(exc).__name__}: {exc})") from None
        else:
            body = await _body(request, settings.max_upload)  # also sent chunked, without a length
            try:
                params = json.loads(body) if body.strip() else {}
            except (ValueError, RecursionError) as exc:
                raise HTTPException(422, f"the body must be a JSON object of options ({type(exc).__name__}: "
                                         f"{exc})") from None
        try:
            checked = check_params(kind, params)
            if upload is not None and kind not in ("image", "tensor"):
                raise ShapesearchError(f"{kind} jobs take no uploaded file")
            if kind in ("image", "tensor"):
                _check_input(kind, checked, upload, settings)
            else:
                _check_model_paths(checked, settings)
                if kind == "layers":
                    layers_request(checked)
                else:
                    compress_configs(checked)
        except ShapesearchError as exc:
            raise _problem(exc, kind) from None
        if upload is not None and (upload.size or 0) > settings.max_upload:  # sent without a length
            raise HTTPException(413, f"the upload is {upload.size:,} bytes; this server takes at most "
                                     f"{settings.max_upload:,}")
        if upload is not None:
            checked["upload"] = Path(upload.filename or "input").name  # the job's name, as a CLI run's
        job = store.add(kind, checked, priority=checked.get("priority", 0), cpus=checked.get("cpus"))
        job_dir = manager.job_dir(job.id)
        job_dir.mkdir(parents=True, exist_ok=True)
        if upload is not None:
            suffix = Path(upload.filename or "").suffix.lower()
            with (job_dir / f"{INPUT}{suffix}").open("wb") as f:
                shutil.copyfileobj(upload.file, f)
        return {"id": job.id}

    @app.get("/api/jobs", summary="List jobs, newest first")
    def list_jobs(state: str | None = None) -> list[dict]:
        if state is not None and state not in STATES:
            raise HTTPException(422, f"state must be one of {', '.join(STATES)}")
        return [view(j) for j in store.list(state)]

    @app.get("/api/jobs/{job_id}", summary="A job: state and progress")
    def get_job(job_id: str) -> dict:
        return view(record(job_id))

    @app.get("/api/jobs/{job_id}/result", summary="A finished job's result (result.json, plan or report)")
    def result(job_id: str) -> JSONResponse:
        job = record(job_id)
        if job.state != "SUCCEEDED":
            raise HTTPException(409, f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
        path = manager.job_dir(job_id) / OUT / RESULT_FILES[job.kind]
        return JSONResponse(json.loads(path.read_text()))

    @app.get("/api/jobs/{job_id}/artifacts", summary="The names of a job's files")
    def list_artifacts(job_id: str) -> list[str]:
        record(job_id)
        return artifacts(job_id)

    @app.get("/api/jobs/{job_id}/artifacts/{name:path}", summary="One of a job's files")
    def artifact(job_id: str, name: str) -> FileResponse:
        record(job_id)
        return FileResponse(artifact_path(job_id, name))

    @app.get("/api/jobs/{job_id}/logs", response_class=PlainTextResponse, summary="A job's log")
    def logs(job_id: str) -> str:
        record(job_id)
        path = manager.job_dir(job_id) / LOG
        return path.read_text() if path.is_file() else ""

    @app.get("/api/jobs/{job_id}/events", summary="Server-sent events: the job whenever it changes")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        record(job_id)

        async def stream():
            last = None
            while not await request.is_disconnected():
                job = store.get(job_id)
                if job is None:
                    return
                now = json.dumps(view(job))
                if now != last:
                    last = now
                    yield f"data: {now}\n\n"
                if job.state in FINISHED:
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/api/jobs/{job_id}/stop", summary="Stop a pending or running job")
    def stop(job_id: str) -> dict:
        job = record(job_id)
        if job.state in FINISHED:
            raise HTTPException(409, f"job {job_id} is {job.state}; only a pending or running job can be stopped")
        manager.stop(job_id)
        return view(record(job_id))

    @app.delete("/api/jobs/{job_id}", summary="Stop a job if needed and remove it with its files")
    def delete(job_id: str) -> dict:
        record(job_id)
        manager.delete(job_id)
        return {"deleted": job_id}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _internal(path: Path) -> bool:
    """A job's working file, not an artifact: checkpoints, temporaries, and source.json (it holds
    the server's own path of the input)."""
    return path.name.startswith("checkpoint") or path.suffix == ".tmp" or path.name == "source.json"


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"the request is over {limit:,} bytes, the most this server takes")
        parts.append(chunk)
    return b"".join(parts)


def _check_input(kind: str, params: dict, upload: object, settings: Settings) -> None:
    """An image/tensor job needs an uploaded file or a ``path`` under ``settings.inputs``."""
    if upload is not None:
        name = Path(getattr(upload, "filename", "") or "")
        if not re.fullmatch(r"\.[a-z0-9]{1,16}", name.suffix.lower()):  # the driver finds input.<suffix>
            raise ShapesearchError(f"the upload {name.name or 'without a name'!r} has no plain suffix; name it as "
                                   "its type (.png, .jpg, .gif, .npy, .safetensors …)")
        _check_suffix(kind, name)
        if "path" in params:
            raise ShapesearchError("give either an uploaded file or path, not both")
        # what the job would refuse from the file's header, refused here (a 422, not a failed job)
        suffix = name.suffix.lower()
        try:
            if suffix == ".safetensors":  # and which tensor
                names = tensor_names(upload.file)
                if names is None:
                    raise ShapesearchError(f"{name.name} is not a readable safetensors file (no valid header)")
                chosen_tensor(name.name, names, params.get("key"))
            elif suffix == ".npy":
                check_no_key(name.name, params.get("key"))
                check_npy_header(upload.file, upload.size or 0, name.name)
            else:
                check_image_header(upload.file, name.name)
        finally:
            upload.file.seek(0)
        return
    if "path" not in params:
        raise ArgumentError("path", "or an uploaded file is needed")
    if settings.inputs is None:
        raise ArgumentError("path", "is not taken by this server (it takes uploads; start it with --inputs DIR to "
                                    "let jobs read files under DIR)")
    params["path"] = _readable("path", params["path"], settings)
    _check_suffix(kind, Path(params["path"]))


def _check_suffix(kind: str, path: Path) -> None:
    """At submission, not in the queue: a tensor job reads arrays, an image job anything else."""
    array = path.suffix.lower() in ARRAY_SUFFIXES
    if kind == "tensor" and not array:
        raise ShapesearchError(f"tensor jobs read {', '.join(ARRAY_SUFFIXES)} files, not {path.name!r}; "
                               "submit an image as an image job")
    if kind == "image" and array:
        raise ShapesearchError(f"image jobs read images, not {path.name!r}; submit an array as a tensor job")


BUILTIN_MODELS = ("smollm2", "minilm")  # compressors.model_loading.BUILTIN, without importing torch here


def _readable(name: str, value: str, settings: Settings) -> str:
    """A server-side path a job may read: under ``--inputs``, or another job's output in ``--data``."""
    if not isinstance(value, str) or not Path(value).is_absolute():  # relative: to what? not the server's cwd
        raise ArgumentError(name, f"{value!r} is not an absolute path on the server")
    try:
        path = Path(value).resolve()
        exists = path.exists()
    except (ValueError, OSError):  # a NUL byte, a name too long for the file system
        path, exists = Path("/"), False
    roots = [r.resolve() for r in (settings.inputs, settings.data / "jobs") if r is not None]
    if not any(path.is_relative_to(r) for r in roots) or not exists:
        where = "the server's --inputs directory or a job's output" if settings.inputs else "a job's output"
        raise ArgumentError(name, f"{value} is not a path under {where} (this server reads no other files)")
    return str(path)


def _check_model_paths(params: dict, settings: Settings) -> None:
    """A layers/compress job's model (a built-in name, else a path), plan and calibration text."""
    if params["model"] not in BUILTIN_MODELS:
        params["model"] = _readable("model", params["model"], settings)
    for name in ("plan", "calib"):
        if name in params:
            params[name] = _readable(name, params[name], settings)


def serve(settings: Settings, port: int = 8000) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=port, log_level="warning")
