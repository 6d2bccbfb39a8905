"""Access control at the HTTP edge: who each request is, what the route needs, and sign-in.

    POST /api/login   {"username", "password"} -> 200 + session cookie | 401 | 429 Retry-After
    POST /api/logout  -> 200, the cookie cleared, the viewers this sign-in opened closed
    GET  /api/session -> {"auth": bool, "user": {...} | null}: what the page may show

One middleware identifies every request (Authorization: Bearer, else the session cookie, else
anonymous) and checks the route's permission in one table (ROUTES); handlers read
`request[IDENTITY]`. Requests that use the cookie to change something must come from the page's
own origin (or auth.allowed_origins). /whep never takes the cookie: a page elsewhere brings a
token. A missing or wrong credential is 401 with `WWW-Authenticate: Bearer` (never Basic, which
makes browsers pop up a dialog); a valid one without the permission is 403.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable

from aiohttp import hdrs, web

from robotcam.auth.access import AccessControl, LoginError
from robotcam.auth.identity import Identity
from robotcam.auth.limits import retry_after_header

log = logging.getLogger(__name__)

IDENTITY = web.RequestKey("robotcam.identity", Identity)
ACCESS = web.AppKey("robotcam.access", AccessControl)
COOKIE = "robotcam_session"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="robotcam"'}
PUBLIC = "public"
HEALTH = "health"  # public, but only {"status"} without `view`
MAX_NAME, MAX_PASSWORD = 64, 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorResponder = Callable[[int, str, dict[str, str]], web.StreamResponse]

#: Route (the resource's canonical path) -> what it needs. Routes not listed need `admin`:
#: a new route is closed until it is put here.
ROUTES: dict[str, str] = {
    "/": PUBLIC,
    "/static": PUBLIC,
    "/help/https": PUBLIC,
    "/robotcam-ca.crt": PUBLIC,
    "/api/login": PUBLIC,
    "/api/logout": PUBLIC,
    "/api/session": PUBLIC,
    "/health": HEALTH,
    "/offer": "view",
    "/connect": "view",
    "/whep": "view",
    "/whep/{key}": "view",
    "/ws": "view",
    "/api/events": "view",
    "/api/config": "view",
    "/api/viewer": "view",
    "/api/camera": "view",
    "/api/talk": "talk",
}
#: GET routes that also take the token as `?token=`: stills and streams are fetched by things
#: that cannot send a header (Home Assistant's generic camera, <img src>, VLC, OctoPrint).
QUERY_TOKEN_ROUTES = {"/snapshot.jpg", "/stream.mjpg", "/api/recordings/{name}"}
TABLE = web.AppKey("robotcam.route_permissions", dict)
#: Routes that start viewers: rate limited per client address (auth.offers_per_minute).
OFFER_ROUTES = {("POST", "/offer"), ("POST", "/connect"), ("POST", "/whep"), ("GET", "/ws")}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    if resource is None:
        return request.path
    canonical = resource.canonical
    return "/static" if canonical.startswith("/static") else canonical


def is_whep(route: str) -> bool:
    return route == "/whep" or route.startswith("/whep/")


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def _json_error(status: int, message: str, headers: dict[str, str]) -> web.StreamResponse:
    return web.json_response({"error": message}, status=status, headers=headers)


def access_middleware(whep_error: ErrorResponder) -> Any:
    """The middleware; WHEP's errors are answered by `whep_error` (problem+json with CORS)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        access = request.app[ACCESS]
        if request.match_info.http_exception is not None:  # 404/405: nothing to protect
            return await handler(request)
        route = route_of(request)
        need = request.app[TABLE].get(route, "admin")
        refuse = whep_error if is_whep(route) else _json_error
        if not access.enabled:
            request[IDENTITY] = access.anonymous()
            return await handler(request)
        if request.method == hdrs.METH_OPTIONS:  # CORS preflights carry no credential
            request[IDENTITY] = access.anonymous()
            return await handler(request)
        identity, via_cookie, problem = _identify(request, access, route)
        if problem is not None:
            _audit_refusal(access, request, route, 401, problem)
            return refuse(401, problem, dict(CHALLENGE))
        assert identity is not None
        if via_cookie and not _origin_ok(request, access):
            origin = request.headers.get("Origin")
            message = (
                f"cross-site request refused: Origin {origin} may not use this sign-in (auth.allowed_origins)"
                if origin else "a request signed in with the cookie must carry an Origin header (browsers send it)"
            )
            _audit_refusal(access, request, route, 403, message)
            return refuse(403, message, {})
        if need not in (PUBLIC, HEALTH) and not identity.allows(need):
            if identity.kind == "anonymous":
                _audit_refusal(access, request, route, 401, "no credential")
                return refuse(401, "sign in first (POST /api/login), or send Authorization: Bearer <token>", dict(CHALLENGE))
            _audit_refusal(access, request, route, 403, f"{identity.label} lacks {need!r}")
            return refuse(403, f"{identity.label} may not do this: it needs the {need!r} permission", {})
        if (request.method, route) in OFFER_ROUTES:
            wait = access.offers.retry_after(request.remote or "?")
            if wait > 0:
                access.audit(f"offers:{request.remote}", "offers rate limited: %s on %s %s", request.remote, request.method, route)
                return refuse(429, "too many new connections from this address: slow down (auth.offers_per_minute)",
                              {"Retry-After": retry_after_header(wait)})
        if identity.kind == "token":
            access.audit(f"token:{identity.name}:{route}:{request.remote}", "token %r used: %s %s from %s",
                         identity.name, request.method, route, request.remote, level=logging.INFO)
        request[IDENTITY] = identity
        return await handler(request)

    return middleware


def _identify(request: web.Request, access: AccessControl, route: str) -> tuple[Identity | None, bool, str | None]:
    """(identity, whether the cookie made it, the 401 message when a credential is bad)."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None and request.method in ("GET", "HEAD") and route in QUERY_TOKEN_ROUTES:
        query_token = request.query.get("token")
        if query_token is not None:
            header = f"Bearer {query_token}"
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, False, "unsupported Authorization: send Authorization: Bearer <token>"
        identity = access.from_token(token.strip())
        if identity is None:
            return None, False, "invalid token"
        return identity, False, None
    cookie = request.cookies.get(COOKIE)
    if cookie and not is_whep(route) and route != "/api/login":  # a sign-in starts afresh
        identity = access.from_cookie(cookie)
        if identity is not None:
            return identity, True, None
    return access.anonymous(), False, None


def _origin_ok(request: web.Request, access: AccessControl) -> bool:
    """A request the cookie authenticates may change state only from the page's own origin."""
    upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
    if request.method not in STATE_CHANGING and not upgrade:
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    origin = origin.lower()
    return origin == own_origin(request) or origin in access.config.allowed_origins


def _audit_refusal(access: AccessControl, request: web.Request, route: str, status: int, why: str) -> None:
    access.audit(f"{status}:{request.remote}:{route}", "refused %d: %s %s from %s (%s)",
                 status, request.method, route, request.remote, why)


# --- sign-in ---------------------------------------------------------------------------------

async def _read_login(request: web.Request) -> tuple[str, str]:
    body = await request.read()  # bounded by client_max_size
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise LoginError(400, 'send JSON {"username": "...", "password": "..."}') from None
    if not isinstance(data, dict):
        raise LoginError(400, 'send JSON {"username": "...", "password": "..."}')
    name, password = data.get("username"), data.get("password")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise LoginError(400, f"'username' must be text of 1-{MAX_NAME} characters")
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD:
        raise LoginError(400, f"'password' must be text of 1-{MAX_PASSWORD} characters")
    return name, password


async def login(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    if not access.enabled:
        return web.json_response({"error": "access control is off (auth.enabled: false): no sign-in needed"}, status=400)
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != own_origin(request) and origin.lower() not in access.config.allowed_origins:
        return web.json_response({"error": "cross-site sign-in refused"}, status=403)
    address = request.remote or "?"
    try:
        name, password = await _read_login(request)
        identity, cookie = await access.login(address, name, password)
    except LoginError as exc:
        headers = dict(CHALLENGE) if exc.status == 401 else {}
        if exc.retry_after:
            headers["Retry-After"] = retry_after_header(exc.retry_after)
        return web.json_response({"error": exc.message}, status=exc.status, headers=headers)
    response = web.json_response({"auth": True, "user": identity.public()})
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="Strict", secure=request.secure, path="/",
        max_age=int(access.config.session_max_age),
    )
    return response


async def logout(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    identity = request[IDENTITY]
    access.logout(identity, request.remote or "?")
    closed = 0
    if identity.login is not None:
        closed = await request.app[ON_LOGOUT](identity.login)
    response = web.json_response({"signed_out": True, "viewers_closed": closed})
    response.del_cookie(COOKIE, path="/")
    return response


async def session(request: web.Request) -> web.Response:
    access = request.app[ACCESS]
    identity = request[IDENTITY]
    return web.json_response({
        "auth": access.enabled,
        "user": identity.public() if identity.kind != "anonymous" else None,
        "anonymous": sorted(access.anonymous().permissions) if access.enabled else None,
        "permissions": identity.public()["permissions"],
    })


#: Closes the viewers a sign-in opened (the daemon's), returns how many.
ON_LOGOUT = web.AppKey("robotcam.on_logout", Callable[[str], Awaitable[int]])  # type: ignore[arg-type]


def add_routes(
    app: web.Application, access: AccessControl, on_logout: Callable[[str], Awaitable[int]],
    more_routes: dict[str, str] | None = None,
) -> None:
    """Sign-in routes, and the route -> permission table: ROUTES plus the other modules'."""
    app[TABLE] = {**ROUTES, **(more_routes or {})}
    app[ACCESS] = access
    app[ON_LOGOUT] = on_logout
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/session", session)
