"""The sd-webui-controlnet extension's routes (API version 3): version, model_list, module_list,
control_types, settings and detect. Its units ride on txt2img / img2img (sdrt.server.controlnet).

(No `from __future__ import annotations` here: FastAPI reads the annotations at run time.)"""
import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import controlnet, controlnet_api
from ..controlnet_api import DetectError, DetectRequest
from ..errors import json_answer
from ..json_body import StrictJSONRoute
from ..state import Server
from ..worker import Cancelled

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/controlnet/version")
async def version() -> dict:
    return controlnet_api.version()


@router.get("/controlnet/model_list")
async def model_list(server: Server, update: bool = True) -> dict:
    """The folder is read on every call, so `update` (rescan) is always done."""
    return {"model_list": await asyncio.to_thread(controlnet.model_list, server.manager.folders)}


@router.get("/controlnet/module_list")
async def module_list(alias_names: bool = False) -> dict:
    return controlnet_api.module_list(alias_names)


@router.get("/controlnet/control_types")
async def control_types(server: Server) -> dict:
    models = await asyncio.to_thread(controlnet.model_list, server.manager.folders)
    return controlnet_api.control_types(models)


@router.get("/controlnet/settings")
async def settings() -> dict:
    return controlnet_api.settings()


@router.post("/controlnet/detect")
async def detect(req: DetectRequest, request: Request, server: Server):
    """{"info": "Success", "images": [base64 PNG, ...][, "poses": [...]]}; the extension's 422 details otherwise.
    Checked and decoded here, run by the worker (model-based preprocessors use the device)."""
    try:
        job_input = await asyncio.to_thread(controlnet_api.prepare_detect, req, server.limits)
        folders = server.manager.folders
        job = server.worker.submit("detect", lambda job, w: controlnet_api.run_detect(job_input, folders))
        answer = await server.wait_for(job, request)
    except DetectError as e:
        return json_answer({"detail": str(e)}, 422)
    except Cancelled:
        return Response(status_code=499)
    return answer
