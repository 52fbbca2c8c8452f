"""The real server in a subprocess on loopback (`sdrt serve`), for the server tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

SDRT = os.path.join(os.path.dirname(sys.executable), "sdrt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, *args: str, auth: tuple[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/sdapi/v1"
        self.auth = auth
        self.log = open(os.devnull, "w") if not os.environ.get("SDRT_SERVER_LOG") else None
        self.proc = subprocess.Popen([SDRT, "serve", "--port", str(self.port), "--log-level", "warning", *args],
                                     stdout=self.log, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 120.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sdrt serve exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if requests.get(f"{self.url}/health/ready", auth=self.auth, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"sdrt serve on port {self.port} not ready after {timeout} s")

    def get(self, path: str, **kw):
        return requests.get(f"{self.api}/{path}", auth=self.auth, timeout=kw.pop("timeout", 60), **kw)

    def post(self, path: str, json=None, **kw):
        return requests.post(f"{self.api}/{path}", json=json, auth=self.auth, timeout=kw.pop("timeout", 120), **kw)

    def wait_busy(self, timeout: float = 30.0) -> dict:
        """Until the worker reports a generation job (progress > 0); returns that progress answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.get("progress", params={"skip_current_image": True}).json()
            if p["state"]["job"] in ("txt2img", "img2img") and p["state"]["sampling_step"] > 0:
                return p
            time.sleep(0.05)
        raise TimeoutError("no job started")

    def terminate(self, timeout: float = 60.0, sig: int = signal.SIGTERM) -> int:
        """SIGTERM (or `sig`) and the exit status (the server drains and exits 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            if self.log:
                self.log.close()
            self.proc.stderr.close()
