"""Request bodies past the limit are refused with 413 before they are buffered, by Content-Length or,
for chunked bodies, while they arrive."""
import asyncio
import json

from sdrt.server.body_limit import BodyLimitMiddleware


async def _echo_length(scope, receive, send):
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"size": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _call(app, chunks, headers):
    sent = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)
    asyncio.run(app({"type": "http", "headers": headers}, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_body_limit():
    app = BodyLimitMiddleware(_echo_length, max_bytes=100)
    assert _call(app, [b"x" * 60, b"y" * 40], [(b"content-length", b"100")]) == (200, b'{"size": 100}')
    status, body = _call(app, [b"x" * 10], [(b"content-length", b"101")])
    assert status == 413 and b"exceeds 100 bytes" in body
    status, _ = _call(app, [b"x" * 60, b"y" * 60], [])  # chunked: no length given
    assert status == 413
    assert _call(app, [b"x"], [(b"content-length", b"lots")])[0] == 413
