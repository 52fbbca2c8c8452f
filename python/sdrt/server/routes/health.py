"""Liveness (the worker thread runs) and readiness (a model is loaded: 503 until then)."""
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from ..json_body import StrictJSONRoute
from ..schemas import HealthResponse
from ..state import Server

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/health/live", response_model=HealthResponse)
async def live(server: Server):
    worker = server.worker
    return {"status": "alive" if worker.alive() else "worker stopped", "queue_length": worker.queue_length()}


@router.get("/health/ready", response_model=HealthResponse)
async def ready(server: Server):
    loaded, worker = server.manager.loaded, server.worker
    body = {"status": "ready" if loaded and worker.alive() else "loading",
            "model": loaded.checkpoint if loaded else None, "queue_length": worker.queue_length()}
    return JSONResponse(jsonable_encoder(body), status_code=200 if body["status"] == "ready" else 503)
