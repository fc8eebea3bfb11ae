"""The FastAPI app of `tunelab serve`: routes, error objects, admin routes for adapters.

Every error a client can cause is an OpenAI error object with a 4xx status
({"error": {"message", "type", "param", "code"}}); guard.py turns anything unexpected into
a 500 object and keeps the server answering.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import TunelabError
from tunelab.runs.onnx_model import is_onnx_export
from tunelab.serve import routes
from tunelab.serve.guard import Guard, Limits, bearer_matches
from tunelab.serve.metrics import Metrics
from tunelab.serve.protocol import ServeError, UnknownModel
from tunelab.serve.schemas import AdapterRequest, parse
from tunelab.serve.wire import error_body, model_card

if TYPE_CHECKING:
    from tunelab.serve.engine import Engine
    from tunelab.serve.targets import Served


class Unauthorized(ServeError):
    status = 401


class Forbidden(ServeError):
    status = 403
    type = "permission_error"


class Conflict(ServeError):
    status = 409


def create_app(served: Served, api_key: str | None = None, admin_key: str | None = None,
               limits: Limits | None = None) -> FastAPI:
    """The server over `served`'s engines and encoders. `api_key`: every route but /health
    wants `Authorization: Bearer KEY`; `admin_key`: the same for /v1/adapters (off if None).
    Starting and stopping the engines is the caller's job (commands/serve.py)."""
    app = FastAPI(title="tunelab serve", summary="OpenAI-compatible API over tunelab models",
                  docs_url=None, redoc_url=None)
    app.state.served, app.state.admin_key, app.state.created = served, admin_key, int(time.time())
    app.state.metrics = Metrics(lambda: sum(e.queue_depth() for e in engines(served)),
                                lambda: sum(e.running() for e in engines(served)))
    app.state.encoder_limiter = anyio.CapacityLimiter(1)
    app.add_middleware(Guard, api_key=api_key, limits=limits or Limits(), metrics=app.state.metrics)
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(routes.router)
    app.include_router(router)
    return app


def engines(served: Served) -> list[Engine]:
    """Each engine once (served.engines maps every model id to its engine)."""
    return list({id(e): e for e in served.engines.values()}.values())


# --- errors: one OpenAI error object each


def _serve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServeError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), exc.status, headers)


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    param = ".".join(str(p) for p in err["loc"][1:]) or None
    return JSONResponse(error_body(f"{param}: {err['msg']}", "invalid_request_error", param), 400)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = (f"no route {request.method} {request.url.path}; the server answers /v1/models, "
               "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/classify, /v1/ner"
               if exc.status_code in (404, 405) else str(exc.detail))
    return JSONResponse(error_body(message, "invalid_request_error", None, "not_found"
                                   if exc.status_code == 404 else None), exc.status_code)


# --- the small routes

router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    created = request.app.state.created
    served = request.app.state.served
    return {"object": "list", "data": [model_card(m, created, served.card(m))
                                       for m in served.ids()]}


@router.get("/v1/models/{model:path}")
def get_model(model: str, request: Request) -> dict[str, Any]:
    served = request.app.state.served
    if model not in served.ids():
        raise routes.unknown_model(served, model)
    return model_card(model, request.app.state.created, served.card(model))


@router.get("/metrics")
def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


def require_admin(request: Request) -> None:
    """Adapter management wants `Authorization: Bearer ADMIN_KEY`, and is off without one."""
    key = request.app.state.admin_key
    if key is None:
        raise Forbidden("adapter management is off; start the server with --admin-key "
                        "(or TUNELAB_ADMIN_KEY)", code="admin_disabled")
    if not request.headers.get("authorization"):
        raise Unauthorized("this route wants the admin key: 'Authorization: Bearer ADMIN_KEY'",
                           code="invalid_api_key")
    if not bearer_matches(request.headers, key):
        raise Forbidden("wrong admin key", code="invalid_api_key")


def base_engine(served: Served, base: str | None) -> Engine:
    """The engine whose base model gets the adapter: `base` names it, or the only one."""
    found = engines(served)
    if base in served.encoders:  # an encoder run or an ONNX export: nothing to adapt here
        raise ServeError(f"{base!r} is {served.encoders[base].kind()}; adapters join "
                         "generative base models only", param="base", code="wrong_route")
    if base is not None:
        for engine in found:
            if engine.base_id == base:
                return engine
        bases = ", ".join(e.base_id for e in found)
        raise UnknownModel(f"no base model {base!r} here (bases: {bases})", param="base",
                           code="model_not_found")
    if len(found) != 1:
        raise ServeError("this server holds no generative model" if not found else
                         "several base models are served; name one with 'base' "
                         f"({', '.join(e.base_id for e in found)})", param="base")
    return found[0]


@router.post("/v1/adapters", dependencies=[Depends(require_admin)])
async def add_adapter(request: Request) -> dict[str, Any]:
    body = parse(AdapterRequest, await request.body())
    served = request.app.state.served
    if is_onnx_export(Path(body.path)):
        raise ServeError(f"{body.path} is an ONNX export, a whole encoder model with its "
                         "adapter folded in, not an adapter; serve it as a target of its own",
                         param="path", code="bad_adapter")
    engine = base_engine(served, body.base)
    if body.name in served.ids():
        raise Conflict(f"a model named {body.name!r} is already served; pick another name or "
                       f"DELETE /v1/adapters/{body.name} first", param="name", code="name_taken")
    try:  # in a worker thread: the load waits for the engine's current step
        await anyio.to_thread.run_sync(engine.add_adapter, body.name, Path(body.path))
    except ServeError:
        raise
    except TunelabError as exc:  # AdapterError: not an adapter dir, another base, ...
        raise ServeError(str(exc), param="path", code="bad_adapter") from None
    served.engines[body.name] = engine
    return model_card(body.name, int(time.time()))


@router.delete("/v1/adapters/{name:path}", dependencies=[Depends(require_admin)])
async def remove_adapter(name: str, request: Request) -> dict[str, Any]:
    served = request.app.state.served
    engine = served.engines.get(name)
    if engine is None:
        raise routes.unknown_model(served, name)
    if name == engine.base_id:
        raise ServeError(f"{name!r} is a base model; only adapters can be removed", param="name")
    await anyio.to_thread.run_sync(engine.remove_adapter, name)
    del served.engines[name]
    return {"id": name, "object": "model", "deleted": True}
