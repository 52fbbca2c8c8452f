"""The job being run: progress (with a live preview), interrupt and skip."""
import time

from fastapi import APIRouter

from ..json_body import StrictJSONRoute
from ..schemas import ProgressResponse, ProgressState
from ..state import Server

router = APIRouter(route_class=StrictJSONRoute)


@router.get("/sdapi/v1/progress", response_model=ProgressResponse)
async def progress(server: Server, skip_current_image: bool = False):
    worker = server.worker
    job = worker.current
    if job is None or job.kind == "load":
        return {"progress": 0.0, "eta_relative": 0.0, "state": ProgressState(), "current_image": None,
                "textinfo": None, "queue_length": worker.queue_length()}
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


@router.post("/sdapi/v1/interrupt")
async def interrupt(server: Server):
    server.worker.interrupt()
    return {}


@router.post("/sdapi/v1/skip")
async def skip(server: Server):
    server.worker.skip()
    return {}
