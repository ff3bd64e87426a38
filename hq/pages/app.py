"""Wiring of the web pages into HQ's application: templates, static files, the pages middleware
(language, CSRF, security headers, HTML error pages in the visitor's language) and the routes."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hq.auth import token_digest
from hq.db import BadData, Busy
from hq.errors import ApiError
from hq.pages.i18n import DEFAULT, LANGUAGES, N_, Translator, negotiate, translator
from hq.ratelimit import RateLimiter
from hq.web import HQ_KEY, client_address

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
LANG_COOKIE = "smartq_lang"
CSRF_COOKIE = "smartq_csrf"
CITIZEN_COOKIE = "smartq_citizen"
CSRF_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
WEB_LIMITER = web.AppKey("web_limiter", RateLimiter)
# What the pages middleware resolves for each page request.
LANG = web.RequestKey("lang", str)
T = web.RequestKey("t", Translator)
CSRF = web.RequestKey("csrf", str)
CITIZEN = web.RequestKey("citizen", object)
STATIC = web.AppKey("static_files", dict)
# No inline script or style anywhere; the only script is /static/live.js.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
       " font-src 'self'; media-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
NOT_PAGES = ("/api/", "/sync/", "/healthz")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PageError(Exception):
    """A 4xx page: ``message`` is a catalog msgid shown in the visitor's language."""

    def __init__(self, status: int, message: str, **values: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.values = status, message, values


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    gzipped: bytes
    content_type: str
    version: str


def load_static() -> dict[str, StaticFile]:
    """Every file of static/, with its gzip form and a content hash for cache-busting URLs."""
    types = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml", ".ico": "image/x-icon"}
    out = {}
    for path in sorted((HERE / "static").iterdir()):
        if path.suffix in types:
            body = path.read_bytes()
            out[path.name] = StaticFile(body, gzip.compress(body, 9, mtime=0), types[path.suffix],
                                        hashlib.sha256(body).hexdigest()[:12])
    return out


async def static_file(request: web.Request) -> web.Response:
    f = request.app[STATIC].get(request.match_info["name"])
    if f is None:
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "public, max-age=31536000, immutable" if request.query.get("v") == f.version
               else "public, max-age=300", "Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=f.gzipped, content_type=f.content_type, headers=headers)
    return web.Response(body=f.body, content_type=f.content_type, headers=headers)


def page_language(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "")
    if lang in LANGUAGES:
        return lang
    return negotiate(request.headers.get("Accept-Language", ""))


def cookie_args(request: web.Request) -> dict[str, Any]:
    s = request.app[HQ_KEY].settings
    return {"httponly": True, "samesite": s.cookie_samesite, "secure": s.cookie_secure, "path": "/"}


def local_path(value: str | None) -> str:
    """A redirect target inside this site only (no //host, no scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2000:
        return "/"
    return value


@web.middleware
async def pages_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(NOT_PAGES):
        return await handler(request)
    if request.path.startswith("/static/"):
        response = await handler(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
    lang = page_language(request)
    request[LANG] = lang
    request[T] = translator(lang)
    csrf = request.cookies.get(CSRF_COOKIE, "")
    new_csrf = not CSRF_RE.match(csrf)
    if new_csrf:
        csrf = secrets.token_urlsafe(32)
    request[CSRF] = csrf
    request[CITIZEN] = None
    try:
        request[CITIZEN] = await current_citizen(request)
        if request.method == "POST":
            await check_csrf(request, None if new_csrf else csrf)
        response = await handler(request)
    except PageError as err:
        response = error_page(request, err.status, err.message, **err.values)
    except web.HTTPException as exc:
        if exc.status < 400:
            response = web.Response(status=exc.status, headers=exc.headers)
        else:
            message = {404: N_("This page does not exist."), 405: N_("This page cannot be used this way."),
                       413: N_("What you sent is too large.")}.get(exc.status, N_("This request could not be handled."))
            response = error_page(request, exc.status, message)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
    except ApiError as err:
        response = error_page(request, err.status if 400 <= err.status < 500 else 400,
                              "This request could not be handled.")
    except BadData:  # a value the database cannot hold (e.g. a NUL character on PostgreSQL)
        response = error_page(request, 400, N_("This request could not be handled."))
    except Busy:
        response = error_page(request, 503, N_("Something went wrong on our side. Please try again in a minute."))
    except Exception:  # never a traceback: log it and say so, in the visitor's language
        logger.exception("unhandled error on %s %s", request.method, request.path)
        response = error_page(request, 500, N_("Something went wrong on our side. Please try again in a minute."))
    if new_csrf and not response.prepared:
        response.set_cookie(CSRF_COOKIE, csrf, **cookie_args(request))
    if not response.prepared:
        secure_headers(response)
    return response


def secure_headers(response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["Referrer-Policy"] = "no-referrer"  # page URLs carry tokens
    h["X-Frame-Options"] = "DENY"
    h["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    h.setdefault("Cache-Control", "no-store")


async def check_csrf(request: web.Request, cookie: str | None) -> None:
    try:
        form = await request.post()  # parsed once here; handlers get aiohttp's cached copy
    except (UnicodeDecodeError, ValueError) as err:
        raise PageError(400, N_("This request could not be handled.")) from err
    supplied = form.get("csrf_token")
    if cookie is None or not isinstance(supplied, str) or not hmac.compare_digest(cookie, supplied):
        raise PageError(403, "This form has expired. Please go back, reload the page and try again.")


async def current_citizen(request: web.Request) -> dict[str, Any] | None:
    token = request.cookies.get(CITIZEN_COOKIE)
    if not token or len(token) > 100:
        return None
    hq = request.app[HQ_KEY]
    now = hq.now()
    row = await hq.db.read(lambda c: c.execute(
        "SELECT c.* FROM citizen_sessions s JOIN citizens c ON c.id = s.citizen_id"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND c.verified = 1", (token_digest(token), now)).fetchone())
    return dict(row) if row else None


def context(request: web.Request, **values: Any) -> dict[str, Any]:
    t: Translator = request.get(T) or translator(DEFAULT)
    static = request.app[STATIC]
    base = {"_": t.gettext, "t": t, "lang": t.language, "languages": LANGUAGES, "csrf": request.get(CSRF, ""),
            "citizen": request.get(CITIZEN), "path": request.path_qs,
            "static": lambda name: f"/static/{name}?v={static[name].version}"}
    base.update(values)
    return base


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    if values.get("errors"):  # msgids -> the visitor's language
        t: Translator = request.get(T) or translator(DEFAULT)
        values["errors"] = {k: t(v, n=values.get("min_password", 10), minutes=values.get("minutes", 0))
                            for k, v in values["errors"].items()}
    html = aiohttp_jinja2.render_string(template, request, context(request, **values)).encode("utf-8")
    headers = {"Vary": "Accept-Encoding"}
    if "gzip" in request.headers.get("Accept-Encoding", "") and len(html) > 512:
        # In line: a few KB take well under a millisecond, less than a hop to aiohttp's executor.
        html = gzip.compress(html, 6, mtime=0)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=html, status=status, content_type="text/html", charset="utf-8", headers=headers)


def error_page(request: web.Request, status: int, message: str, **values: Any) -> web.Response:
    t: Translator = request.get(T) or translator(DEFAULT)
    titles = {400: N_("The request was not understood"), 403: N_("Not allowed"), 404: N_("Page not found"),
              405: N_("Not allowed"), 409: N_("That did not work"), 413: N_("Too large"), 429: N_("Too many attempts")}
    return render(request, "error.html", status=status, title=titles.get(status, N_("Something went wrong")),
                  message=t.gettext(message, **values))


async def set_language(request: web.Request) -> web.Response:
    """GET /lang/{code}?next=/path: the switcher's links; remembered in a cookie for a year."""
    code = request.match_info["code"]
    if code not in LANGUAGES:
        raise PageError(404, "This page does not exist.")
    response = redirect(local_path(request.query.get("next")))
    response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, **cookie_args(request))
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: the GET after every successful POST (post-redirect-get)."""
    return web.Response(status=303, headers={"Location": location})


async def rate_check(request: web.Request) -> None:
    ok, retry = await request.app[WEB_LIMITER].allow(client_address(request))
    if not ok:
        raise PageError(429, "Too many attempts from your network. Please wait {n} seconds and try again.",
                        n=max(1, int(retry + 0.999)))


def setup_pages(app: web.Application) -> None:
    """Templates, static files, the pages middleware and every page route."""
    from hq.pages import accounts, status, views

    hq = app[HQ_KEY]
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                               auto_reload=False)  # templates are part of the release: no stat() per render
    env.globals["LANGUAGES"] = LANGUAGES
    app[STATIC] = load_static()
    app[WEB_LIMITER] = RateLimiter("web", hq.settings.web_rate_per_minute, 20, hq.clock.now, hq.db)
    app.middlewares.append(pages_middleware)
    r = app.router
    r.add_get("/static/{name}", static_file)
    r.add_get("/lang/{code}", set_language)
    views.add_routes(r)
    status.add_routes(app)
    accounts.add_routes(r)


def citizen_session_cookie(request: web.Request, response: web.StreamResponse, token: str | None) -> None:
    if token is None:
        response.del_cookie(CITIZEN_COOKIE, path="/")
    else:
        response.set_cookie(CITIZEN_COOKIE, token, max_age=request.app[HQ_KEY].settings.session_ttl_s,
                            **cookie_args(request))
