"""Strict JSON request bodies. Python's json module reads NaN, Infinity and -Infinity (and numbers
too large for a float, as infinity), and \\ud800-style escapes as lone surrogates: none is JSON
that the server could write back, so a field that refused such a value could not even say so (and
a free-form field such as override_settings would echo it in `parameters`). Containers nested
hundreds deep are read, but not written back (the encoders recurse). A body holding any of these is
answered 422 naming each place, before FastAPI validates it against the route's model.

Every router of the server uses StrictJSONRoute (sdrt.server.app checks that it does)."""
from __future__ import annotations

import json
import math
from typing import Any, Callable, Coroutine, Iterator

from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

MAX_REPORTED = 10  # places named in one answer
MAX_DEPTH = 64  # nested containers; A1111 requests need a handful


class UnwritableJSON(HTTPException):
    """A body holding values strict JSON cannot carry: 422 with pydantic-style errors. (An
    HTTPException: it is raised while FastAPI reads the body, which lets only those through.)"""

    def __init__(self, errors: list[dict]):
        super().__init__(status_code=422, detail=errors)


def unwritable(body: Any, limit: int = MAX_REPORTED) -> list[dict]:
    """Errors naming (by `loc`, as FastAPI does) where parsed JSON `body` holds a non-finite
    number, a lone surrogate or containers nested deeper than MAX_DEPTH, in document order; at
    most `limit`."""
    found = []
    for loc, (kind, message, extra) in _walk(body):
        found.append({"type": kind, "loc": [_text(k) for k in loc], "msg": message, **extra})
        if len(found) >= limit:
            break
    return found


def _walk(body: Any) -> Iterator[tuple[list, tuple]]:
    """(loc, (type, msg, extra)) for each unwritable value or key; iterative, not recursive."""
    path: list = []  # keys of the open containers: len(path) == len(stack) - 1
    stack: list[Iterator] = [iter((("body", body),))]
    while stack:
        for key, value in stack[-1]:
            if isinstance(key, str) and not _writable_text(key):
                yield [*path, key], _SURROGATE
            if isinstance(value, (dict, list)):
                if len(path) == MAX_DEPTH:
                    yield [*path, key], _TOO_DEEP
                elif isinstance(value, dict) or not _plain(value):
                    path.append(key)
                    stack.append(iter(value.items()) if isinstance(value, dict) else enumerate(value))
                    break
            elif isinstance(value, float) and not math.isfinite(value):
                yield [*path, key], (*_NON_FINITE, {"input": json.dumps(value)})  # 'NaN', 'Infinity', ...
            elif isinstance(value, str) and not _writable_text(value):
                yield [*path, key], _SURROGATE
        else:
            stack.pop()
            if path:
                path.pop()


_NON_FINITE = ("finite_number", "Input should be a finite number: JSON has no NaN or Infinity (nor numbers beyond "
                                "1.8e308)")
_SURROGATE = ("string_unicode", "Input should be valid Unicode: a \\ud800-\\udfff escape without its pair "
                                "(a lone surrogate) is not a character", {})
_TOO_DEEP = ("too_deep", f"Input should be nested at most {MAX_DEPTH} levels deep", {})
_SCALARS = frozenset({int, bool, type(None)})


def _plain(items: list) -> bool:
    """Whether a list holds only values with nothing to look into (a fast path for long lists)."""
    kinds = set(map(type, items))
    if kinds <= _SCALARS:
        return True
    if kinds == {float}:
        return all(map(math.isfinite, items))
    return kinds == {str} and all(map(str.isascii, items))


def _writable_text(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(key: Any) -> Any:
    return key if not isinstance(key, str) or _writable_text(key) else key.encode("utf-8", "backslashreplace").decode()


class StrictJSONRequest(Request):
    """A request whose JSON body, once parsed (FastAPI parses it only for routes that take one),
    is checked by `unwritable`."""
    _checked = False

    async def json(self) -> Any:
        body = await super().json()  # parsed once, then kept by Starlette
        if not self._checked:
            errors = unwritable(body)
            if errors:
                raise UnwritableJSON(errors)
            self._checked = True
        return body


class StrictJSONRoute(APIRoute):
    """An APIRoute whose handler reads the body through StrictJSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
