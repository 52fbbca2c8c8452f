"""The server's error answers, each strict JSON in UTF-8: what a request held that JSON cannot carry
back (NaN, Infinity, bytes that are not UTF-8, lone surrogates) is written as text in the answer,
never echoed as is (the answer itself would then fail: a 500)."""
from __future__ import annotations

import json
import math
from typing import Any, Optional

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException

from .generation import RequestError
from .images import ImageInputError
from .models import OptionError
from .worker import QueueFull, ShuttingDown


def json_safe(value: Any) -> Any:
    """`value` as JSON-ready data that strict JSON and UTF-8 can carry: non-finite numbers become
    'NaN' / 'Infinity' / '-Infinity', lone surrogates and undecodable bytes backslash escapes."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return json_safe(jsonable_encoder(value))  # models, exceptions in a validation error's ctx, ...


def json_answer(content: Any, status_code: int, headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse(json_safe(content), status_code=status_code, headers=headers)


def unprocessable(loc, message: str) -> JSONResponse:
    return json_answer({"detail": [{"loc": list(loc), "msg": message, "type": "value_error"}]}, 422)


async def bad_request(request, exc: RequestError | ImageInputError) -> Response:
    return unprocessable(exc.loc, str(exc))


async def bad_option(request, exc: OptionError) -> Response:
    return unprocessable(("body", exc.field), str(exc))


async def busy(request, exc: QueueFull) -> Response:
    return json_answer({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after)})


async def closing(request, exc: ShuttingDown) -> Response:
    return json_answer({"detail": str(exc)}, 503, {"Retry-After": "5"})


async def invalid_request(request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 (each error with the input it refused), made safe to write."""
    return json_answer({"detail": exc.errors()}, 422)


async def http_error(request, exc: HTTPException) -> Response:
    """FastAPI's own answer to an HTTPException, made safe to write."""
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return json_answer({"detail": exc.detail}, exc.status_code, exc.headers)


HANDLERS = ((RequestError, bad_request), (ImageInputError, bad_request), (OptionError, bad_option),
            (QueueFull, busy), (ShuttingDown, closing), (RequestValidationError, invalid_request),
            (HTTPException, http_error))
