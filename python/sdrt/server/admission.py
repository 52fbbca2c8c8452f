"""Two gates in front of the application, before any body is read: a cap on generation requests in
flight (503 + Retry-After past it), and, for a server without credentials on loopback, a check of
the Host header (a page in the user's browser could otherwise reach it by DNS rebinding)."""
from __future__ import annotations

import json
from typing import Callable

GENERATION_PATHS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image",
                    "/sdapi/v1/extra-batch-images")  # what queues work for the worker
# and the ControlNet preprocessor runs (worker threads): capped with them, so bodies cannot pile up
ADMITTED_PATHS = GENERATION_PATHS + ("/controlnet/detect",)
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


async def _answer(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class AdmissionMiddleware:
    def __init__(self, app, paths: tuple, max_in_flight: int, queue_length: Callable[[], int]):
        self.app, self.paths, self.max_in_flight, self.queue_length = app, paths, max_in_flight, queue_length
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            return await _answer(send, 503, f"the server is busy ({self.in_flight} generation requests in flight)",
                                 [(b"retry-after", str(max(1, self.queue_length())).encode())])
        self.in_flight += 1  # the event loop's thread only: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def host_name(header: bytes) -> str:
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:7860
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostCheckMiddleware:
    def __init__(self, app, allowed: list[str]):
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"host", b"")
        if host_name(header) not in self.allowed:
            return await _answer(send, 400, "Host header not allowed: this server answers loopback names only "
                                            "(start it with --api-auth to serve other names)")
        return await self.app(scope, receive, send)
