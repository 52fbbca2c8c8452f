"""txt2img, img2img and png-info. The generation routes' request models are built per app from
its limits (sdrt.server.schemas.request_models: the bounds are in the OpenAPI schema), so FastAPI
must see them in the handlers' annotations: `router` makes those two handlers per app.

(No `from __future__ import annotations` here: FastAPI reads those annotations at run time.)"""
import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import generation
from ..errors import json_answer, unprocessable
from ..images import decode_image, read_png_info
from ..json_body import StrictJSONRoute
from ..schemas import ImageResponse, PngInfoRequest, PngInfoResponse
from ..state import Server, ServerState
from ..worker import Cancelled

log = logging.getLogger("sdrt.server")


def router(txt2img_request: type, img2img_request: type) -> APIRouter:
    """The routes of this module, txt2img and img2img taking the given request models."""
    routes = APIRouter(route_class=StrictJSONRoute)

    async def txt2img(req: txt2img_request, request: Request, server: Server):
        return await generate("txt2img", req, request, server)

    async def img2img(req: img2img_request, request: Request, server: Server):
        return await generate("img2img", req, request, server)

    routes.add_api_route("/sdapi/v1/txt2img", txt2img, methods=["POST"], response_model=ImageResponse)
    routes.add_api_route("/sdapi/v1/img2img", img2img, methods=["POST"], response_model=ImageResponse)
    routes.add_api_route("/sdapi/v1/png-info", png_info, methods=["POST"], response_model=PngInfoResponse)
    return routes


async def generate(kind: str, req, request: Request, server: ServerState):
    """Checks `req`, queues it, and answers with its result or what went wrong."""
    prepared = await asyncio.to_thread(generation.prepare, kind, req, server.manager, server.limits)  # decodes images
    job = server.worker.submit(kind, lambda job, w: generation.run(prepared, job, w.state))
    try:
        return await server.wait_for(job, request)
    except Cancelled:
        return Response(status_code=499)  # nobody is listening; what A1111's proxies log
    except ValueError as e:  # the pipeline's own checks name the field (ParamError.field) or in the message
        key = prepared.control_key
        return unprocessable(generation.param_loc(getattr(e, "field", None), key), generation.param_message(e, key))
    except generation.ModelUnavailable as e:
        return json_answer({"detail": str(e)}, 503, {"Retry-After": "30"})
    except MemoryError as e:
        return json_answer({"detail": f"{kind} ran out of memory; ask for fewer or smaller images ({e})"}, 503,
                           {"Retry-After": "5"})
    except Exception as e:
        if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            return json_answer({"detail": f"{kind} ran out of device memory; ask for fewer or smaller images"}, 503,
                               {"Retry-After": "5"})
        log.exception("%s failed", kind)
        return json_answer({"detail": f"{kind} failed: {type(e).__name__}: {e}"}, 500)


async def png_info(req: PngInfoRequest, server: Server):
    from ...pipelines.infotext import parse_infotext

    image = await asyncio.to_thread(decode_image, req.image, ("body", "image"), server.limits)
    items = read_png_info(image)
    text = items.pop("parameters", "")
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}
