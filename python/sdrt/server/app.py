"""The FastAPI application: A1111's /sdapi/v1 routes (sdrt.server.routes) over one generation
worker, the ControlNet extension's /controlnet routes, plus health, assembled here with the
server's state, error answers, lifespan and the middleware in front (body limit, admission, auth
or Host check)."""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from .. import __version__
from . import errors
from .admission import ADMITTED_PATHS, AdmissionMiddleware, HostCheckMiddleware
from .auth import BasicAuthMiddleware
from .body_limit import BodyLimitMiddleware
from .json_body import StrictJSONRoute
from .routes import controlnet, extras, generation, health, listings, options_models, progress
from .schemas import request_models
from .state import ServerConfig, ServerState

__all__ = ["ServerConfig", "create_app"]

log = logging.getLogger("sdrt.server")


def create_app(config: ServerConfig) -> FastAPI:
    """The app for `config`; `app.state.asgi` is what to serve (the app behind its middleware)."""
    app = FastAPI(title="sdrt", version=__version__, lifespan=_lifespan,
                  description="AUTOMATIC1111-compatible Stable Diffusion API (/sdapi/v1) served by sdrt")
    app.state.server = ServerState.from_config(config)
    for exc_type, handler in errors.HANDLERS:
        app.add_exception_handler(exc_type, handler)
    routers = [generation.router(*request_models(config.limits)), progress.router, options_models.router,
               listings.router, extras.router, controlnet.router, health.router]
    for router in routers:
        _check_strict_json(router)
        app.include_router(router)
    app.state.asgi = _middleware(app, app.state.server)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI):
    server: ServerState = app.state.server
    worker, model = server.worker, server.config.model
    worker.start()
    job = worker.submit("load", lambda job, w: w.state.load(model))
    job.future.add_done_callback(lambda f: not f.cancelled() and f.exception() and log.error(
        "loading %s failed: %s", model, f.exception()))
    yield
    await asyncio.to_thread(worker.stop)  # queued jobs finish first (SIGTERM drains)


def _middleware(app: FastAPI, server: ServerState):
    config = server.config
    asgi = BodyLimitMiddleware(app, config.limits.max_body_bytes)
    # generation requests past the queue (plus the one running and one being checked) are refused
    # before their bodies are read, so waiting clients cannot pile up bodies and decoded images
    asgi = AdmissionMiddleware(asgi, ADMITTED_PATHS, config.max_queue + 2, server.worker.queue_length)
    if config.credentials:
        asgi = BasicAuthMiddleware(asgi, config.credentials)
    elif config.allowed_hosts:
        asgi = HostCheckMiddleware(asgi, config.allowed_hosts)
    return asgi


def _check_strict_json(router: APIRouter) -> None:
    """Every route reads its body as strict JSON (sdrt.server.json_body)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and not isinstance(route, StrictJSONRoute):
            raise TypeError(f"route {route.path} is a {type(route).__name__}, not a StrictJSONRoute")
