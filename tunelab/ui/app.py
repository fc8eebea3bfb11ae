"""The FastAPI app of `tunelab ui`: one static page (static/) and a small JSON API over the
runs directory, tunelab's own config validation and the inference code.

Errors a user can cause come back as {"error": message} with a 4xx status and tunelab's own
message (a config error reads as on the command line); anything else is a 500 with one line,
never a stack trace. Heavier neighbours (data preview, the comparison report, chat models,
explanations) are passed in as `Services` by commands/ui.py, so this layer imports none of
them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.config import dump_config, validate
from tunelab.config.run import TASKS
from tunelab.config.switch import apply_overrides
from tunelab.errors import ConfigError, TunelabError
from tunelab.ui.guard import Auth, AuthMiddleware
from tunelab.ui.runs import RunError, Runs, check_name, read_metrics
from tunelab.ui.tryit import Models
from tunelab.ui.uploads import save_upload

STATIC = Path(__file__).parent / "static"
DATA_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".conll", ".txt")
log = logging.getLogger("tunelab.ui")


@dataclass
class Services:
    """What the app borrows from the commands layer (all optional: a missing one answers
    400 naming it)."""

    preview: Callable[[Any, int], str] | None = None  # (RunConfig, n) -> data inspect text
    compare: Callable[[list[Path], Path], Path] | None = None  # (run dirs, out) -> HTML page
    generator: Callable[[str, list[str], str | None], tuple[Any, Any]] | None = None
    explain: Callable[[Path, str], list[dict[str, Any]]] | None = None


class NotFound(TunelabError):
    pass


def create_app(runs_dir: Path, services: Services | None = None, auth: Auth | None = None,
               max_upload_bytes: int = 50 * 2**20, data_dir: Path | None = None) -> FastAPI:
    app = FastAPI(title="tunelab ui", docs_url=None, redoc_url=None, openapi_url=None)
    runs_dir = Path(runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    services = services or Services()
    app.state.runs, app.state.services = Runs(runs_dir), services
    app.state.models = Models(app.state.runs, services.generator)
    app.state.max_upload, app.state.data_dir = max_upload_bytes, data_dir
    if auth is not None:
        app.add_middleware(AuthMiddleware, auth=auth)
    app.add_exception_handler(TunelabError, _user_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _user_error(request: Request, exc: Exception) -> JSONResponse:
    status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, RunError) else 400
    return JSONResponse({"error": str(exc)}, status)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"error": str(exc.detail)}, exc.status_code)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("ui: %s %s failed", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the ui's log"},
                        500)


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


# --- new run: options, the form as a config, preview, upload, start


@router.get("/api/options")
def options(request: Request) -> dict[str, Any]:
    """What the form's pickers offer: tasks, methods, packaged models, catalog data, files."""
    from tunelab.data.catalog import CATALOG, data_dir
    from tunelab.methods import METHODS
    from tunelab.models import PACKAGED

    runs: Runs = request.app.state.runs
    folders = [(Path(request.app.state.data_dir or data_dir()), "*/*"),
               (runs.root / "uploads", "*")]
    files = sorted(str(p) for folder, pattern in folders if folder.is_dir()
                   for p in folder.glob(pattern) if p.suffix in DATA_SUFFIXES)[:500]
    return {"tasks": list(TASKS), "methods": sorted(METHODS), "models": sorted(PACKAGED),
            "data": sorted(CATALOG), "files": files, "runs_dir": str(runs.root)}


def form_tree(form: dict[str, Any], runs: Runs) -> dict[str, Any]:
    """The config tree the form describes; the output_dir is always RUNS/NAME."""
    name = check_name(str(form.get("name", "")))
    tree: dict[str, Any] = {"task": form.get("task") or "classification",
                            "model": {"name": form.get("model", "")},
                            "data": {"train": form.get("train", "")},
                            "method": {"name": form.get("method") or "lora"}, "train": {}}
    if form.get("dev"):
        tree["data"]["dev"] = form["dev"]
    # every value is read as on the command line (dotted.key=value), so "1e-3" is a number
    train = [f"train.{k}={v}" for k, v in (form.get("options") or {}).items()
             if str(v).strip() != ""]
    method = [f"method.{ln.strip()}" for ln in str(form.get("method_options", "")).splitlines()
              if ln.strip()]
    lines = [ln.strip() for ln in str(form.get("overrides", "")).splitlines()]
    apply_overrides(tree, train + method + [ln for ln in lines if ln and not ln.startswith("#")],
                    "form")
    tree["output_dir"] = str(runs.dir(name))
    return tree


def _validated(request: Request, form: dict[str, Any]) -> Any:
    runs: Runs = request.app.state.runs
    return validate(form_tree(form, runs), "form")


@router.post("/api/config")
def check_config(form: dict[str, Any], request: Request) -> dict[str, Any]:
    """The YAML the form will run, validated: {yaml, error} (error: tunelab's own message)."""
    try:
        tree = form_tree(form, request.app.state.runs)
    except ConfigError as exc:
        return {"yaml": "", "error": str(exc), "valid": False}
    try:
        return {"yaml": dump_config(validate(tree, "form")), "error": None, "valid": True}
    except ConfigError as exc:
        return {"yaml": yaml.safe_dump(tree, sort_keys=False), "error": str(exc),
                "valid": False}


@router.post("/api/preview")
def preview(form: dict[str, Any], request: Request) -> dict[str, Any]:
    """`tunelab data inspect` on the form's config: a few examples, trained tokens marked."""
    services: Services = request.app.state.services
    if services.preview is None:
        raise TunelabError("the data preview is not available in this app")
    return {"text": services.preview(_validated(request, form), int(form.get("n", 3)))}


@router.put("/api/upload/{filename}")
async def upload(filename: str, request: Request) -> dict[str, Any]:
    path = await save_upload(request, request.app.state.runs.root / "uploads", filename,
                             request.app.state.max_upload)
    return {"path": str(path), "bytes": path.stat().st_size}


@router.post("/api/runs")
def start_run(form: dict[str, Any], request: Request) -> dict[str, Any]:
    cfg = _validated(request, form)
    return request.app.state.runs.start(form["name"], dump_config(cfg))


# --- runs


@router.get("/api/runs")
def list_runs(request: Request) -> dict[str, Any]:
    runs: Runs = request.app.state.runs
    return {"runs": [runs.describe(n) for n in runs.names()]}


def _known(runs: Runs, name: str) -> str:
    if check_name(name) not in runs.names():
        raise NotFound(f"no run {name!r} in {runs.root}")
    return name


@router.get("/api/runs/{name}")
def run_detail(name: str, request: Request, since: int = 0) -> dict[str, Any]:
    """The run's row, its metrics.jsonl records from line `since`, and its log's tail."""
    runs: Runs = request.app.state.runs
    _known(runs, name)
    return {**runs.describe(name), "records": read_metrics(runs.dir(name), max(since, 0)),
            "log": runs.log_tail(name)}


@router.post("/api/runs/{name}/stop")
def stop_run(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.runs.stop(_known(request.app.state.runs, name))


@router.post("/api/runs/{name}/resume")
def resume_run(name: str, request: Request) -> dict[str, Any]:
    return request.app.state.runs.resume(_known(request.app.state.runs, name))


@router.get("/api/compare")
def compare(request: Request) -> Response:
    """`tunelab report` over several runs: its self-contained HTML page."""
    runs: Runs = request.app.state.runs
    names = [_known(runs, n) for n in request.query_params.getlist("run")]
    services: Services = request.app.state.services
    if len(names) < 2:
        raise TunelabError("compare: pick two or more runs")
    if services.compare is None:
        raise TunelabError("the comparison report is not available in this app")
    page = services.compare([runs.dir(n) for n in names], runs.state_dir / "compare")
    return HTMLResponse(page.read_text(encoding="utf-8"))


# --- try it


@router.post("/api/predict")
def predict(body: dict[str, Any], request: Request) -> dict[str, Any]:
    name = _known(request.app.state.runs, str(body.get("run", "")))
    return request.app.state.models.predict(name, str(body.get("text", "")),
                                            bool(body.get("explain")),
                                            request.app.state.services.explain)


@router.post("/api/chat")
def chat(body: dict[str, Any], request: Request) -> Response:
    """The reply to `messages`, streamed as plain text chunks while it is generated."""
    name = _known(request.app.state.runs, str(body.get("run", "")))
    chunks = request.app.state.models.chat(name, body.get("messages") or [],
                                           body.get("adapter") or None,
                                           min(int(body.get("max_new_tokens", 64)), 1024))
    return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")


@router.get("/api/adapters/{name}")
def adapters(name: str, request: Request) -> dict[str, Any]:
    """The adapters a chat with this run can switch between (runs on the same base)."""
    return {"adapters": request.app.state.models.adapters(_known(request.app.state.runs, name))}
