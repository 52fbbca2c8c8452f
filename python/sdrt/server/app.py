"""The FastAPI application: A1111's /sdapi/v1 routes over one generation worker, plus health.

(No `from __future__ import annotations` here: FastAPI reads the request models, which are built
per app from its limits, from the handlers' annotations at run time.)"""
import asyncio
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Optional

from fastapi import Body, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..loaders.model_folders import ModelFolders
from . import generation
from .admission import GENERATION_PATHS, AdmissionMiddleware, HostCheckMiddleware
from .auth import BasicAuthMiddleware
from .body_limit import BodyLimitMiddleware
from .images import ImageInputError, decode_image, read_png_info
from .limits import Limits
from .models import MODEL_OPTIONS, ModelManager, OptionError
from .names import sampler_items, scheduler_items
from .schemas import (EmbeddingsResponse, HealthResponse, ImageResponse, LoraItem, PngInfoRequest, PngInfoResponse,
                      ProgressResponse, ProgressState, SamplerItem, SchedulerItem, SDModelItem, SDVaeItem,
                      request_models)
from .worker import Cancelled, GenerationWorker, QueueFull, ShuttingDown

log = logging.getLogger("sdrt.server")


@dataclass
class ServerConfig:
    model: str = "toy"
    models_dir: Optional[str] = None
    device: str = "cpu"
    attention: str = "sdpa"
    credentials: list = field(default_factory=list)   # [(user, password)] bytes; empty: no auth
    limits: Limits = field(default_factory=Limits)
    max_queue: int = 8
    load_kwargs: dict = field(default_factory=dict)
    # without credentials on loopback: the Host names accepted (a web page's DNS rebinding would
    # otherwise reach the API through the user's browser); empty: any
    allowed_hosts: list = field(default_factory=list)


def _unprocessable(loc, message: str) -> JSONResponse:
    return JSONResponse({"detail": [{"loc": list(loc), "msg": message, "type": "value_error"}]}, status_code=422)


def create_app(config: ServerConfig) -> FastAPI:
    folders = ModelFolders(config.models_dir) if config.models_dir else None
    load_kwargs = {"device": config.device, **config.load_kwargs}
    if config.attention != "sdpa":
        load_kwargs["attention"] = config.attention
    manager = ModelManager(folders, load_kwargs)
    worker = GenerationWorker(manager, max_queue=config.max_queue)
    limits = config.limits
    Txt2ImgRequest, Img2ImgRequest = request_models(limits)

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        job = worker.submit("load", lambda job, w: w.state.load(config.model))
        job.future.add_done_callback(lambda f: not f.cancelled() and f.exception() and log.error(
            "loading %s failed: %s", config.model, f.exception()))
        yield
        await asyncio.to_thread(worker.stop)  # queued jobs finish first (SIGTERM drains)

    app = FastAPI(title="sdrt", version=__version__, lifespan=lifespan,
                  description="AUTOMATIC1111-compatible Stable Diffusion API (/sdapi/v1) served by sdrt")
    app.state.worker, app.state.manager = worker, manager

    @app.exception_handler(generation.RequestError)
    @app.exception_handler(ImageInputError)
    async def _bad_request(request, exc):
        return _unprocessable(exc.loc, str(exc))

    @app.exception_handler(OptionError)
    async def _bad_option(request, exc):
        return _unprocessable(("body", exc.field), str(exc))

    @app.exception_handler(QueueFull)
    async def _busy(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(ShuttingDown)
    async def _closing(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    async def wait_for(job, request: Request):
        """The job's result; cancels it when the client disconnects while it waits or runs."""
        while True:
            done, _ = await asyncio.wait({job.future}, timeout=0.2)
            if done:
                if job.future.cancelled():
                    raise Cancelled
                return job.future.result()
            if await request.is_disconnected():
                worker.cancel(job)
                raise Cancelled

    async def generate(kind: str, req, request: Request):
        prepared = await asyncio.to_thread(generation.prepare, kind, req, manager, limits)  # decodes images
        job = worker.submit(kind, lambda job, w: generation.run(prepared, job, w.state))
        try:
            return await wait_for(job, request)
        except Cancelled:
            return Response(status_code=499)  # nobody is listening; what A1111's proxies log
        except ValueError as e:  # the pipeline's own checks name the field in the message
            return _unprocessable(("body",), str(e))
        except generation.ModelUnavailable as e:
            return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": "30"})
        except MemoryError as e:
            return JSONResponse({"detail": f"{kind} ran out of memory; ask for fewer or smaller images ({e})"},
                                status_code=503, headers={"Retry-After": "5"})
        except Exception as e:
            if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
                return JSONResponse({"detail": f"{kind} ran out of device memory; ask for fewer or smaller images"},
                                    status_code=503, headers={"Retry-After": "5"})
            log.exception("%s failed", kind)
            return JSONResponse({"detail": f"{kind} failed: {type(e).__name__}: {e}"}, status_code=500)

    @app.post("/sdapi/v1/txt2img", response_model=ImageResponse)
    async def txt2img(req: Txt2ImgRequest, request: Request):
        return await generate("txt2img", req, request)

    @app.post("/sdapi/v1/img2img", response_model=ImageResponse)
    async def img2img(req: Img2ImgRequest, request: Request):
        return await generate("img2img", req, request)

    @app.post("/sdapi/v1/png-info", response_model=PngInfoResponse)
    async def png_info(req: PngInfoRequest):
        from ..pipelines.infotext import parse_infotext

        image = await asyncio.to_thread(decode_image, req.image, ("body", "image"), limits)
        items = read_png_info(image)
        text = items.pop("parameters", "")
        return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}

    @app.get("/sdapi/v1/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False):
        job = worker.current
        if job is None or job.kind == "load":
            return {"progress": 0.0, "eta_relative": 0.0, "state": ProgressState(), "current_image": None,
                    "textinfo": None, "queue_length": worker.queue_length()}
        import time

        done = job.progress()
        elapsed = time.monotonic() - (job.started or time.monotonic())
        eta = elapsed / done - elapsed if done > 0.01 else 0.0
        if not skip_current_image:
            job.preview_wanted = True  # the worker renders one at its next step
        state = ProgressState(skipped=job.skipped, interrupted=job.interrupted, job=job.kind,
                              job_count=job.job_count, job_timestamp=job.timestamp, job_no=job.job_no,
                              sampling_step=job.sampling_step, sampling_steps=job.sampling_steps)
        return {"progress": done, "eta_relative": max(0.0, eta), "state": state,
                "current_image": None if skip_current_image else job.current_image,
                "textinfo": None, "queue_length": worker.queue_length()}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt():
        worker.interrupt()
        return {}

    @app.post("/sdapi/v1/skip")
    async def skip():
        worker.skip()
        return {}

    @app.get("/sdapi/v1/options")
    async def get_options() -> dict[str, Any]:
        return manager.all_options()

    @app.post("/sdapi/v1/options")
    async def set_options(request: Request, values: dict[str, Any] = Body(...)):
        checked = manager.set_options(values)  # OptionError (422) before anything changes
        wanted = {k: values[k] for k in MODEL_OPTIONS if values.get(k) is not None}
        if wanted:
            loaded = manager.loaded
            checkpoint = wanted.get("sd_model_checkpoint", loaded.checkpoint if loaded else config.model)
            vae = wanted.get("sd_vae", loaded.vae if loaded else "Automatic")
            selection = (manager.resolve_checkpoint(checkpoint)[0], manager.resolve_vae(vae)[0])
            if loaded is not None and selection == (loaded.checkpoint, loaded.vae):
                wanted = {}  # already loaded: nothing to queue (GET -> POST round trips)
        if wanted:
            job = worker.submit("load", lambda job, w: w.state.load(checkpoint, vae))
            try:
                await wait_for(job, request)
            except Cancelled:
                return Response(status_code=499)
            except Exception as e:
                return _unprocessable(("body", "sd_model_checkpoint"), f"could not load {checkpoint!r}: {e}")
        manager.options.update(checked)
        return None

    @app.get("/sdapi/v1/samplers", response_model=list[SamplerItem])
    async def samplers():
        return sampler_items()

    @app.get("/sdapi/v1/schedulers", response_model=list[SchedulerItem])
    async def schedulers():
        return scheduler_items()

    @app.get("/sdapi/v1/sd-models", response_model=list[SDModelItem])
    async def sd_models():
        return await asyncio.to_thread(manager.checkpoints)

    @app.get("/sdapi/v1/sd-vae", response_model=list[SDVaeItem])
    async def sd_vae():
        return await asyncio.to_thread(manager.vaes)

    @app.get("/sdapi/v1/loras", response_model=list[LoraItem])
    async def loras():
        return await asyncio.to_thread(manager.loras)

    async def nothing_to_refresh():
        return None  # listings are read from the folders on every call

    for kind in ("checkpoints", "vae", "loras"):
        app.add_api_route(f"/sdapi/v1/refresh-{kind}", nothing_to_refresh, methods=["POST"],
                          name=f"refresh_{kind}")

    @app.get("/sdapi/v1/embeddings", response_model=EmbeddingsResponse)
    async def embeddings():
        loaded = manager.loaded
        db = getattr(loaded.pipe, "embeddings", None) if loaded else None
        if db is None:
            return {"loaded": {}, "skipped": {}}
        out = {}
        for name, emb in db.embeddings.items():
            vectors = next(iter(emb.vectors.values()))
            out[name] = {"step": emb.step, "sd_checkpoint": None, "sd_checkpoint_name": None,
                         "shape": int(vectors.shape[-1]), "vectors": int(vectors.shape[0])}
        skipped = {os.path.splitext(os.path.basename(p))[0]: {"reason": why} for p, why in db.skipped.items()}
        return {"loaded": out, "skipped": skipped}

    @app.get("/sdapi/v1/scripts")
    async def scripts():
        return {"txt2img": [], "img2img": []}

    # A1111 routes for features sdrt does not have: empty, so clients that list them keep working
    async def nothing_listed() -> list[dict]:
        return []

    for listing in ("prompt-styles", "upscalers", "face-restorers", "hypernetworks"):
        app.add_api_route(f"/sdapi/v1/{listing}", nothing_listed, methods=["GET"], name=listing.replace("-", "_"))

    @app.get("/sdapi/v1/cmd-flags")
    async def cmd_flags() -> dict[str, Any]:
        return {"api_auth": bool(config.credentials), "models_dir": config.models_dir, "device": config.device,
                "queue_size": config.max_queue}

    @app.get("/sdapi/v1/memory")
    async def memory():
        return _memory()

    @app.get("/health/live", response_model=HealthResponse)
    async def live():
        return {"status": "alive" if worker.alive() else "worker stopped", "queue_length": worker.queue_length()}

    @app.get("/health/ready", response_model=HealthResponse)
    async def ready():
        loaded = manager.loaded
        body = {"status": "ready" if loaded and worker.alive() else "loading",
                "model": loaded.checkpoint if loaded else None, "queue_length": worker.queue_length()}
        return JSONResponse(jsonable_encoder(body), status_code=200 if body["status"] == "ready" else 503)

    asgi = BodyLimitMiddleware(app, limits.max_body_bytes)
    # generation requests past the queue (plus the one running and one being checked) are refused
    # before their bodies are read, so waiting clients cannot pile up bodies and decoded images
    asgi = AdmissionMiddleware(asgi, GENERATION_PATHS, config.max_queue + 2, worker.queue_length)
    if config.credentials:
        asgi = BasicAuthMiddleware(asgi, config.credentials)
    elif config.allowed_hosts:
        asgi = HostCheckMiddleware(asgi, config.allowed_hosts)
    app.state.asgi = asgi
    return app


def _memory() -> dict:
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
