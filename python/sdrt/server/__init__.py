"""`sdrt serve`: AUTOMATIC1111's /sdapi/v1 HTTP API on FastAPI + uvicorn, with one generation
worker per device, a bounded queue, progress / interrupt / skip, HTTP Basic auth and request limits.
Needs the `server` extra (pip install 'sdrt[server]')."""
from .app import ServerConfig, create_app
from .limits import Limits

__all__ = ["Limits", "ServerConfig", "create_app"]
