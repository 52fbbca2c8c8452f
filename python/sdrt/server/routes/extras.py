"""POST /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images: upscaling in the worker
thread (model upscalers share the device with generation), A1111's response shapes."""
import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import extras
from ..errors import unprocessable
from ..json_body import StrictJSONRoute
from ..state import Server, ServerState
from ..worker import Cancelled

router = APIRouter(route_class=StrictJSONRoute)


@router.post("/sdapi/v1/extra-single-image")
async def extra_single_image(req: extras.ExtrasSingleImageRequest, request: Request, server: Server):
    answer = await _run(req, [req.image], request, server)
    if isinstance(answer, Response):
        return answer
    images, html_info = answer
    return {"html_info": html_info, "image": images[0]}  # A1111's API answers the images whatever show_extras_results


@router.post("/sdapi/v1/extra-batch-images")
async def extra_batch_images(req: extras.ExtrasBatchImagesRequest, request: Request, server: Server):
    answer = await _run(req, [item.data for item in req.imageList], request, server)
    if isinstance(answer, Response):
        return answer
    images, html_info = answer
    return {"html_info": html_info, "images": images}


async def _run(req, images: list[str], request: Request, server: ServerState):
    params, decoded = await asyncio.to_thread(extras.prepare, req, images, server.manager, server.limits)
    job = server.worker.submit("extras", lambda job, w: extras.run(params, decoded, w.state, job))
    try:
        return await server.wait_for(job, request)
    except Cancelled:
        return Response(status_code=499)
    except ValueError as e:  # a model file that does not load names itself (its path starts the message)
        return unprocessable(("body",), str(e))
