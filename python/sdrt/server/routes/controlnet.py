"""The sd-webui-controlnet extension's routes (API version 3): version, model_list, module_list,
control_types, settings and detect. Its units ride on txt2img / img2img (sdrt.server.controlnet)."""
import asyncio

from fastapi import APIRouter

from .. import controlnet, controlnet_api
from ..controlnet_api import DetectError, DetectRequest
from ..errors import json_answer
from ..json_body import StrictJSONRoute
from ..state import Server

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
async def detect(req: DetectRequest, server: Server):
    """{"info": "Success", "images": [base64 PNG, ...]}; the extension's 422 details otherwise."""
    try:
        images = await asyncio.to_thread(controlnet_api.detect_images, req, server.limits)
    except DetectError as e:
        return json_answer({"detail": str(e)}, 422)
    return {"info": "Success", "images": images}
