"""Schemathesis hooks for test_server_schemathesis (loaded through SCHEMATHESIS_HOOKS).

About half of the generated JSON bodies get a non-finite number (NaN, Infinity, -Infinity, or
1e400, which Python reads as infinity) in place of one of their values, at any depth (the body
itself included) or under a new key. Schemathesis 4.32 has no option to generate them (its floats
are always finite) and requests refuses to write them, so such a body is sent as JSON text.

The check NonFiniteBodiesRefused asserts that each of them is answered 422 and, at the end of the
run, that every operation taking a body was sent some."""
import json

import schemathesis
from hypothesis import strategies as st

LITERALS = ("NaN", "Infinity", "-Infinity", "1e400")
BODY_OPERATIONS = {"POST /sdapi/v1/txt2img", "POST /sdapi/v1/img2img", "POST /sdapi/v1/png-info",
                   "POST /sdapi/v1/options"}
_MARK = "sdrt-non-finite-number"  # stands for the literal until the body is written
_NEW_KEY = "sdrt_extra"


def _places(value, path=()):
    """Paths to each value of a JSON document (the root included), and to a new key in each object."""
    yield path
    if isinstance(value, dict):
        yield (*path, _NEW_KEY)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _places(item, (*path, key))


def _replaced(value, path, new):
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(copy.get(path[0]) if isinstance(copy, dict) else copy[path[0]], path[1:], new)
    return copy


def _with_literal(body, path, literal) -> bytes:
    text = json.dumps(_replaced(body, path, _MARK))
    return text.replace(json.dumps(_MARK), literal, 1).encode()


@schemathesis.hook
def flatmap_body(context, body):
    if not isinstance(body, (dict, list, str, int, float, type(None))):  # bytes: not a JSON document
        return st.just(body)
    altered = st.tuples(st.sampled_from(list(_places(body))), st.sampled_from(LITERALS))
    return st.one_of(st.just(body), altered.map(lambda place: _with_literal(body, *place)))


class _NonFinite(Exception):
    pass


def _refuse(text):
    raise _NonFinite(text)


def _refuse_overflow(text):
    return float(text) if abs(float(text)) != float("inf") else _refuse(text)


def _non_finite(body) -> bool:
    """Whether a request body holds a non-finite number."""
    if not isinstance(body, bytes):
        return False
    try:
        json.loads(body, parse_constant=_refuse, parse_float=_refuse_overflow)
    except _NonFinite:
        return True
    except ValueError:
        return False
    return False


@schemathesis.check
class NonFiniteBodiesRefused:
    """Bodies holding a non-finite number get 422; every operation with a body was sent some."""

    def __init__(self):
        self.sent = set()

    def after_response(self, ctx, response, case):
        if _non_finite(response.request.body):
            self.sent.add(case.operation.label)
            if response.status_code != 422:
                raise AssertionError(f"a body with a non-finite number got {response.status_code}, not 422: "
                                     f"{response.request.body[:300]!r}")

    def after_run(self, ctx):
        missing = BODY_OPERATIONS - self.sent
        if missing:
            raise AssertionError(f"no body with a non-finite number was sent to {', '.join(sorted(missing))}")
