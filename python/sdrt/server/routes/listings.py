"""What the server offers: samplers, schedulers, upscalers and latent upscale modes, scripts (none),
the A1111 listings of features sdrt does not have (empty), its command-line flags and its memory."""
import os
from typing import Any

from fastapi import APIRouter

from ..json_body import StrictJSONRoute
from ..names import sampler_items, scheduler_items
from ..schemas import SamplerItem, SchedulerItem
from ..state import Server

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
async def samplers():
    return sampler_items()


@router.get("/sdapi/v1/schedulers", response_model=list[SchedulerItem])
async def schedulers():
    return scheduler_items()


@router.get("/sdapi/v1/scripts")
async def scripts():
    return {"txt2img": [], "img2img": []}


# A1111 routes for features sdrt does not have: empty, so clients that list them keep working
async def nothing_listed() -> list[dict]:
    return []


@router.get("/sdapi/v1/upscalers")
async def upscalers(server: Server) -> list[dict]:
    return [entry.item() for entry in server.manager.upscalers.entries()]


@router.get("/sdapi/v1/latent-upscale-modes")
async def latent_upscale_modes() -> list[dict]:
    from ...postprocess.upscalers import LATENT_UPSCALE_MODES

    return [{"name": name} for name in LATENT_UPSCALE_MODES]


for _listing in ("prompt-styles", "face-restorers", "hypernetworks"):
    router.add_api_route(f"/sdapi/v1/{_listing}", nothing_listed, methods=["GET"], name=_listing.replace("-", "_"))


@router.get("/sdapi/v1/cmd-flags")
async def cmd_flags(server: Server) -> dict[str, Any]:
    config = server.config
    return {"api_auth": bool(config.credentials), "models_dir": config.models_dir, "device": config.device,
            "queue_size": config.max_queue}


@router.get("/sdapi/v1/memory")
async def memory():
    page = os.sysconf("SC_PAGE_SIZE")
    total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    out = {"ram": {"free": free, "used": total - free, "total": total}}
    import torch

    if torch.cuda.is_available():
        free_c, total_c = torch.cuda.mem_get_info()
        out["cuda"] = {"system": {"free": free_c, "used": total_c - free_c, "total": total_c},
                       "active": {"current": torch.cuda.memory_allocated(), "peak": torch.cuda.max_memory_allocated()},
                       "reserved": {"current": torch.cuda.memory_reserved(),
                                    "peak": torch.cuda.max_memory_reserved()}}
    else:
        out["cuda"] = {"error": "no CUDA device"}
    return out
