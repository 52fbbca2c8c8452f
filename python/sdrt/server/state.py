"""What the routes share: the server's configuration, its model manager and its generation worker,
held by one ServerState on `app.state.server` and handed to a route by declaring a `Server`
parameter (a FastAPI dependency)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

from fastapi import Depends, Request

from ..loaders.model_folders import ModelFolders
from .limits import Limits
from .models import ModelManager
from .worker import Cancelled, GenerationWorker, Job


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


@dataclass(frozen=True)
class ServerState:
    """One per app: built from its config before the app, read by the routes (never rebound)."""
    config: ServerConfig
    manager: ModelManager
    worker: GenerationWorker

    @classmethod
    def from_config(cls, config: ServerConfig) -> "ServerState":
        folders = ModelFolders(config.models_dir) if config.models_dir else None
        load_kwargs = {"device": config.device, **config.load_kwargs}
        if config.attention != "sdpa":
            load_kwargs["attention"] = config.attention
        manager = ModelManager(folders, load_kwargs)
        return cls(config, manager, GenerationWorker(manager, max_queue=config.max_queue))

    @property
    def limits(self) -> Limits:
        return self.config.limits

    async def wait_for(self, job: Job, request: Request) -> Any:
        """The job's result; cancels it when the client disconnects while it waits or runs."""
        while True:
            done, _ = await asyncio.wait({job.future}, timeout=0.2)
            if done:
                if job.future.cancelled():
                    raise Cancelled
                return job.future.result()
            if await request.is_disconnected():
                self.worker.cancel(job)
                raise Cancelled


def server_state(request: Request) -> ServerState:
    return request.app.state.server


Server = Annotated[ServerState, Depends(server_state)]
