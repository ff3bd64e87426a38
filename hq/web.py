"""HTTP plumbing shared by the handlers: typed app keys, JSON in/out, error and auth handling."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from hq.auth import COOKIE_NAME, Principal, csrf_ok, lookup_session
from hq.core import HQ
from hq.db import BadData, Busy
from hq.errors import ApiError, bad_request
from hq.ratelimit import RateLimiter
from sync.replication import error_response

logger = logging.getLogger(__name__)

HQ_KEY = web.AppKey("hq", HQ)
BOOKING_LIMITER = web.AppKey("booking_limiter", RateLimiter)
LOGIN_LIMITER = web.AppKey("login_limiter", RateLimiter)
MAX_BODY = 64 * 1024
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hq_of(request: web.Request) -> HQ:
    return request.app[HQ_KEY]


def jresp(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON response encoded with orjson (UTF-8, compact): a fraction of json.dumps' cost per request."""
    try:
        body = orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits: the standard encoder handles it
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
    return web.Response(body=body, status=status, headers=headers, content_type="application/json",
                        charset="utf-8")


def error_json(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The one error envelope of SmartQ's HTTP APIs (sync.replication.error_response)."""
    return error_response(status, code, message, headers)


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", "request body too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", "request body too large")
    ctype = request.content_type
    if ctype in ("application/x-www-form-urlencoded",):
        from urllib.parse import parse_qsl
        return dict(parse_qsl(raw.decode("utf-8", "replace")))
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as err:  # also invalid UTF-8, NaN and out-of-range integers
        raise bad_request("body must be JSON") from err


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as err:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return error_json(err.status, err.code, err.message, headers)
    except BadData:  # e.g. a NUL character, which PostgreSQL's text cannot hold
        return error_json(400, "bad_request", "the request holds a value that cannot be stored")
    except Busy:
        return error_json(503, "busy", "too busy, try again", {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        return error_json(exc.status, code, exc.reason, {k: v for k, v in exc.headers.items() if k == "Allow"} or None)
    except Exception:  # the last line of defence: log it, never leak a traceback
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_json(500, "internal", "internal error")


def client_address(request: web.Request) -> str:
    if hq_of(request).settings.trust_forwarded_for:
        fwd = request.headers.get("X-Forwarded-For", "")
        if fwd:
            return fwd.split(",")[0].strip()
    return request.remote or "unknown"


async def principal_of(request: web.Request) -> Principal | None:
    hq = hq_of(request)
    now = hq.now()
    auth = request.headers.get("Authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <token>'")
        p = await hq.db.read(lambda c: lookup_session(c, token.strip(), "bearer", now))
        if p is None:
            raise ApiError(401, "unauthorized", "token unknown or expired")
        return p
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return await hq.db.read(lambda c: lookup_session(c, cookie, "cookie", now))
    return None


def authed(handler: Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]) -> Handler:
    """Require a logged-in principal; cookie-authenticated writes also need the CSRF token."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        p = await principal_of(request)
        if p is None:
            raise ApiError(401, "unauthorized", "log in or send a bearer token")
        if p.via == "cookie" and request.method in UNSAFE:
            supplied = request.headers.get("X-CSRF-Token")
            if supplied is None and request.content_type == "application/x-www-form-urlencoded":
                supplied = (await request.post()).get("csrf_token")  # type: ignore[assignment]
            if not csrf_ok(p, supplied if isinstance(supplied, str) else None):
                raise ApiError(403, "csrf", "missing or wrong CSRF token")
        return await handler(request, p)

    wrapper.authed = True  # type: ignore[attr-defined]
    return wrapper


def rate_limited(key: web.AppKey[RateLimiter]) -> Callable[[Handler], Handler]:
    def deco(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            limiter = request.app[key]
            if not limiter.enabled:  # rate 0: no address to work out, no coroutine to run
                return await handler(request)
            ok, retry = await limiter.allow(client_address(request))
            if not ok:
                raise_retry = max(1, int(retry + 0.999))
                return error_json(429, "rate_limited", "too many requests, slow down",
                                  {"Retry-After": str(raise_retry)})
            return await handler(request)
        return wrapper
    return deco
