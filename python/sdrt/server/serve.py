"""Starting the server: address safety checks, then uvicorn. SIGTERM (and Ctrl-C) stop accepting
connections, let the requests in flight and their queued jobs finish, and exit 0."""
from __future__ import annotations

import ipaddress
import signal
import socket


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (socket.gaierror, ValueError):
            return False


def check_exposure(host: str, has_auth: bool, insecure: bool) -> None:
    """Refuse to listen beyond loopback without --api-auth, unless explicitly told to."""
    if not is_loopback(host) and not has_auth and not insecure:
        raise ValueError(f"--host {host} is reachable from other machines and --api-auth is not set: anyone there "
                         "could use this server. Set --api-auth user:password, or pass --insecure-no-auth if a "
                         "proxy in front of it authenticates.")


def serve(app_config, host: str, port: int, *, log_level: str = "info") -> int:
    import uvicorn

    from .app import create_app

    app = create_app(app_config)
    stops = []
    # uvicorn handles SIGTERM / SIGINT itself (drain, then stop) and re-raises the signal once it is
    # done; these handlers take that re-raise, so the process exits 0 instead of dying by it
    previous = {sig: signal.signal(sig, lambda s, frame: stops.append(s)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = uvicorn.Server(uvicorn.Config(app.state.asgi, host=host, port=port, log_level=log_level,
                                               lifespan="on", timeout_graceful_shutdown=None))
        server.run()
        return 0 if server.started or stops else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
