"""HTTP Basic auth on every route (A1111's --api-auth "user:pass,user2:pass2"), as ASGI middleware
so that nothing (docs and the OpenAPI schema included) is reachable without it. Credentials are
compared with hmac.compare_digest, every pair checked, so timing does not tell which part failed."""
from __future__ import annotations

import base64
import binascii
import hmac
import json


def parse_credentials(spec: str) -> list[tuple[bytes, bytes]]:
    """`user:pass,user2:pass2` -> [(user, pass)]; raises ValueError naming --api-auth."""
    pairs = []
    for item in spec.split(","):
        item = item.strip()
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError("--api-auth: expected user:password[,user2:password2] with non-empty parts")
        pairs.append((user.encode(), password.encode()))
    return pairs


class BasicAuthMiddleware:
    def __init__(self, app, credentials: list[tuple[bytes, bytes]], realm: str = "sdrt"):
        self.app, self.credentials, self.realm = app, credentials, realm

    def _allowed(self, header: bytes | None) -> bool:
        if not header or not header[:6].lower() == b"basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        ok = False
        for u, p in self.credentials:  # no early exit
            ok |= hmac.compare_digest(user, u) & hmac.compare_digest(password, p) & bool(sep)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self._allowed(header):
            return await self.app(scope, receive, send)
        body = json.dumps({"detail": "Incorrect username or password"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", f'Basic realm="{self.realm}"'.encode())]})
        await send({"type": "http.response.body", "body": body})
