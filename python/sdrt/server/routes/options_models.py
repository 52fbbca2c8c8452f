"""A1111's options (setting sd_model_checkpoint / sd_vae loads that model) and the models the
server may use: checkpoints, VAEs, LoRAs and embeddings."""
import asyncio
import os
from typing import Any, Optional

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from ..errors import unprocessable
from ..json_body import StrictJSONRoute
from ..models import MODEL_OPTIONS
from ..schemas import EmbeddingsResponse, LoraItem, SDModelItem, SDVaeItem
from ..state import Server, ServerState
from ..worker import Cancelled

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/sdapi/v1/options")
async def get_options(server: Server) -> dict[str, Any]:
    return server.manager.all_options()


@router.post("/sdapi/v1/options")
async def set_options(request: Request, server: Server, values: dict[str, Any] = Body(...)):
    manager = server.manager
    checked = manager.set_options(values)  # OptionError (422) before anything changes
    selection = model_to_load(values, server)
    if selection is not None:
        checkpoint, vae = selection
        job = server.worker.submit("load", lambda job, w: w.state.load(checkpoint, vae))
        try:
            await server.wait_for(job, request)
        except Cancelled:
            return Response(status_code=499)
        except Exception as e:
            return unprocessable(("body", "sd_model_checkpoint"), f"could not load {checkpoint!r}: {e}")
    manager.options.update(checked)
    return None


def model_to_load(values: dict, server: ServerState) -> Optional[tuple[str, str]]:
    """(checkpoint, vae) that the options `values` select, unless none is set or that is what is
    loaded (GET -> POST round trips queue nothing); unknown names raise OptionError (422)."""
    manager = server.manager
    wanted = {k: values[k] for k in MODEL_OPTIONS if values.get(k) is not None}
    if not wanted:
        return None
    loaded = manager.loaded
    checkpoint = wanted.get("sd_model_checkpoint", loaded.checkpoint if loaded else server.config.model)
    vae = wanted.get("sd_vae", loaded.vae if loaded else "Automatic")
    selection = (manager.resolve_checkpoint(checkpoint)[0], manager.resolve_vae(vae)[0])
    if loaded is not None and selection == (loaded.checkpoint, loaded.vae):
        return None
    return checkpoint, vae


@router.get("/sdapi/v1/sd-models", response_model=list[SDModelItem])
async def sd_models(server: Server):
    return await asyncio.to_thread(server.manager.checkpoints)


@router.get("/sdapi/v1/sd-vae", response_model=list[SDVaeItem])
async def sd_vae(server: Server):
    return await asyncio.to_thread(server.manager.vaes)


@router.get("/sdapi/v1/loras", response_model=list[LoraItem])
async def loras(server: Server):
    return await asyncio.to_thread(server.manager.loras)


async def nothing_to_refresh():
    return None  # listings are read from the folders on every call


for _kind in ("checkpoints", "vae", "loras"):
    router.add_api_route(f"/sdapi/v1/refresh-{_kind}", nothing_to_refresh, methods=["POST"], name=f"refresh_{_kind}")


@router.get("/sdapi/v1/embeddings", response_model=EmbeddingsResponse)
async def embeddings(server: Server):
    loaded = server.manager.loaded
    db = getattr(loaded.pipe, "embeddings", None) if loaded else None
    if db is None:
        return {"loaded": {}, "skipped": {}}
    out = {}
    for name, emb in db.embeddings.items():
        # A1111: an SDXL embedding's shape is its encoders' widths added (clip_l 768 + clip_g 1280)
        out[name] = {"step": emb.step, "sd_checkpoint": None, "sd_checkpoint_name": None,
                     "shape": sum(int(v.shape[-1]) for v in emb.vectors.values()), "vectors": emb.num_vectors}
    skipped = {os.path.splitext(os.path.basename(p))[0]: {"reason": why} for p, why in db.skipped.items()}
    return {"loaded": out, "skipped": skipped}
