"""WHEP (draft-ietf-wish-whep-03, sharing its HTTP rules with WHIP, RFC 9725) at /whep.

    POST /whep              application/sdp offer -> 201 Created, the answer (application/sdp),
                            Location: /whep/<session key>, ETag, Link: <stun:...>; rel="ice-server"
    PATCH /whep/<key>       application/trickle-ice-sdpfrag: more remote candidates -> 204
    DELETE /whep/<key>      end the session -> 200; afterwards 404
    OPTIONS                 CORS preflight (any origin: WHEP players are web pages elsewhere)

The answer carries every candidate of ours (aiortc does not trickle), so nothing ever flows
from the server after the 201. What the draft leaves open, decided here:

- ICE restarts are not supported: a PATCH with new ICE credentials gets 422 (the draft's
  answer when only trickle is supported) and the session keeps its ICE session.
- The ETag names the ICE session (it is our answer's ice-ufrag). A PATCH whose If-Match names
  another one gets 412; a PATCH without If-Match is accepted, because players in the wild
  (the draft author's own whip-whep client among them) trickle without one.
- Errors are RFC 9457 problem details (application/problem+json) whose `error` member is the
  same message every other robotcam API error carries.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from robotcam.http.auth import IDENTITY
from robotcam.http.cameras import wanted_cameras
from robotcam.service.daemon import Daemon
from robotcam.http.payload import RequestPayloadError, abandon_body, body_problem
from robotcam.webrtc.peers import OfferError, PeerSession
from robotcam.http.signaling.candidates import CandidateError, parse_sdpfrag
from robotcam.webrtc.turn import ice_servers

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT_METHODS = ("OPTIONS", "GET", "HEAD", "POST")
SESSION_METHODS = ("OPTIONS", "GET", "HEAD", "PATCH", "DELETE")
RETRY_AFTER = 5  # seconds a refused player waits (viewer limit reached, shutting down)
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch, Accept-Post, Retry-After",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WhepError(Exception):
    """A request we refuse, with its status, message and extra response headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def problem(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    title = HTTPStatus(status).phrase
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": message, "error": message},
        status=status,
        content_type="application/problem+json",
        headers={**CORS, "Cache-Control": "no-store", **(headers or {})},
    )


def quoted(value: str) -> str:
    """An HTTP quoted-string (RFC 9110 §5.6.4)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(daemon: Daemon) -> list[str]:
    """One Link header value per STUN/TURN URL, with credentials (RFC 9725 §4.6); TURN
    credentials are minted for this response when webrtc.turn_secret is set."""
    links = []
    for server in ice_servers(daemon.config.webrtc):
        for url in server["urls"]:
            link = f'<{url}>; rel="ice-server"'
            if "username" in server and url.startswith(("turn:", "turns:")):
                link += f'; username={quoted(server["username"])}'
                link += f'; credential={quoted(server.get("credential", ""))}'
                link += '; credential-type="password"'
            links.append(link)
    return links


def session_etag(session: PeerSession) -> str:
    """A strong entity-tag for the session's ICE session: our answer's ICE username fragment."""
    match = re.search(r"^a=ice-ufrag:(\S+)", session.pc.localDescription.sdp, re.M)
    return f'"{match.group(1) if match else session.key[:16]}"'


def remote_ice_credentials(session: PeerSession) -> tuple[str | None, str | None]:
    sdp = session.pc.remoteDescription.sdp if session.pc.remoteDescription else ""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.M)
    return (ufrag.group(1) if ufrag else None, pwd.group(1) if pwd else None)


def if_match_ok(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.1 with strong comparison: '*' or one of the listed tags."""
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or etag in tags


def media_type(request: web.Request) -> str | None:
    """The Content-Type's media type, lower case; None when the header cannot be parsed (the
    standard library's parser raises IndexError on some malformed parameters, e.g. "a;b*")."""
    try:
        return request.content_type.lower()
    except (IndexError, ValueError):
        return None


async def read_body(request: web.Request, limit: int, expected: str, accept_header: str) -> str:
    """The body as text, after checking its media type and size."""
    given = request.headers.get("Content-Type")
    if given is None or media_type(request) != expected:
        raise WhepError(
            415,
            f"Content-Type must be {expected} (got {given or 'none'})",
            {accept_header: expected},
        )
    if request.content_length is not None and request.content_length > limit:
        raise WhepError(413, f"request body too large: the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(limit + 1 - size):  # read() may return a part
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise WhepError(413, f"request body too large: the limit is {limit} bytes")
    except RequestPayloadError as exc:
        abandon_body(request)
        raise WhepError(400, body_problem(exc), {"Connection": "close"}) from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise WhepError(400, "the body is not UTF-8 text") from None


class WhepRoutes:
    """The WHEP endpoint and its sessions, for one daemon."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    # --- dispatch: every response, errors included, carries the CORS headers ----------------

    async def endpoint(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, ENDPOINT_METHODS, {
            "OPTIONS": self._endpoint_options, "GET": self._endpoint_get,
            "HEAD": self._endpoint_get, "POST": self._post,
        })

    async def session(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(request, SESSION_METHODS, {
            "OPTIONS": self._session_options, "GET": self._session_get,
            "HEAD": self._session_get, "PATCH": self._patch, "DELETE": self._delete,
        })

    async def _dispatch(
        self, request: web.Request, allowed: tuple[str, ...], handlers: dict[str, Handler]
    ) -> web.StreamResponse:
        handler = handlers.get(request.method)
        try:
            if handler is None:
                raise WhepError(
                    405, f"{request.method} is not supported here: use {', '.join(allowed)}",
                    {"Allow": ", ".join(allowed)},
                )
            return await handler(request)
        except WhepError as exc:
            # the route's pattern, not the path: session keys stay out of the log
            log.debug("WHEP %s %s refused (%d): %s", request.method, _route(request), exc.status, exc.message)
            return problem(exc.status, exc.message, exc.headers)
        except Exception:  # noqa: BLE001 - a bug must cost one request, not the daemon
            log.exception("internal error on WHEP %s %s", request.method, _route(request))
            return problem(500, "internal error: see the robot's log")

    def _live_session(self, request: web.Request) -> PeerSession:
        session = self.daemon.peers.by_key(request.match_info["key"])
        if session is None:
            raise WhepError(404, "no such WHEP session: it ended, or never existed")
        return session

    # --- the endpoint ------------------------------------------------------------------------

    async def _endpoint_options(self, request: web.Request) -> web.StreamResponse:
        headers: CIMultiDict[str] = CIMultiDict(CORS)
        headers.update({
            "Allow": ", ".join(ENDPOINT_METHODS),
            "Accept-Post": SDP,
            "Access-Control-Allow-Methods": ", ".join(ENDPOINT_METHODS),
            "Access-Control-Allow-Headers": "Content-Type, Authorization",
            "Access-Control-Max-Age": "86400",
            "Cache-Control": "no-store",
        })
        # RFC 9725 §4.6: ICE servers in an OPTIONS answer only when it is not a mere CORS
        # preflight (or the preflight asks for Link), since minting credentials has a cost.
        asked = request.headers.get("Access-Control-Request-Headers", "").lower()
        if "Access-Control-Request-Method" not in request.headers or "link" in asked:
            for link in ice_server_links(self.daemon):
                headers.add("Link", link)
        return web.Response(status=200, headers=headers)

    async def _endpoint_get(self, request: web.Request) -> web.StreamResponse:
        """Discovery (draft §4.2): a HEAD/GET names the media type a POST takes."""
        return web.Response(
            status=200, body=b"", content_type=SDP,
            headers={**CORS, "Accept-Post": SDP, "Cache-Control": "no-store"},
        )

    async def _post(self, request: web.Request) -> web.StreamResponse:
        daemon = self.daemon
        sdp = await read_body(request, daemon.config.server.max_body_bytes, SDP, "Accept-Post")
        if not sdp.strip():
            raise WhepError(400, "empty body: POST an SDP offer (Content-Type: application/sdp)")
        try:
            session, answer = await daemon.peers.open_session(
                sdp, request[IDENTITY], wanted_cameras(request.query))
        except OfferError as exc:
            log.info("WHEP offer from %s refused (%d): %s", request.remote, exc.status, exc.message)
            extra = {"Retry-After": str(RETRY_AFTER)} if exc.status == 503 else {}
            raise WhepError(exc.status, exc.message, extra) from None
        session.extras["signaling"] = "whep"
        headers: CIMultiDict[str] = CIMultiDict(CORS)
        headers.update({
            "Location": f"/whep/{session.key}",
            "ETag": session_etag(session),
            "Accept-Patch": SDPFRAG,
            "Cache-Control": "no-store",
        })
        for link in ice_server_links(daemon):
            headers.add("Link", link)
        return web.Response(status=201, text=answer, content_type=SDP, headers=headers)

    # --- a session ---------------------------------------------------------------------------

    async def _session_options(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200, headers={
            **CORS,
            "Allow": ", ".join(SESSION_METHODS),
            "Accept-Patch": SDPFRAG,
            "Access-Control-Allow-Methods": ", ".join(SESSION_METHODS),
            "Access-Control-Allow-Headers": "Content-Type, If-Match, Authorization",
            "Access-Control-Max-Age": "86400",
            "Cache-Control": "no-store",
        })

    async def _session_get(self, request: web.Request) -> web.StreamResponse:
        self._live_session(request)
        return web.Response(status=204, headers={**CORS, "Cache-Control": "no-store"})

    async def _delete(self, request: web.Request) -> web.StreamResponse:
        session = self._live_session(request)
        await self.daemon.peers.close_session(session, "WHEP DELETE")
        return web.Response(status=200, headers={**CORS, "Cache-Control": "no-store"})

    async def _patch(self, request: web.Request) -> web.StreamResponse:
        session = self._live_session(request)
        etag = session_etag(session)
        if_match = request.headers.get("If-Match")
        if if_match is not None and not if_match_ok(if_match, etag):
            raise WhepError(412, f"If-Match {if_match} does not name this ICE session ({etag})")
        body = await read_body(request, self.daemon.config.server.max_body_bytes, SDPFRAG, "Accept-Patch")
        try:
            frag = parse_sdpfrag(body)
        except CandidateError as exc:
            raise WhepError(400, f"invalid trickle-ice-sdpfrag: {exc}") from None
        ufrag, pwd = remote_ice_credentials(session)
        if (frag.ufrag and frag.ufrag != ufrag) or (frag.pwd and frag.pwd != pwd):
            raise WhepError(
                422,
                "ICE restarts are not supported: the session keeps its ICE session; to start "
                "over, DELETE it and POST a new offer",
            )
        pc = session.pc
        try:
            for candidate in frag.candidates:
                await pc.addIceCandidate(candidate)
            if frag.end_of_candidates:
                await pc.addIceCandidate(None)
        except ValueError as exc:
            raise WhepError(400, f"invalid candidate: {exc}") from None
        return web.Response(status=204, headers={**CORS, "Cache-Control": "no-store"})


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def add_routes(app: web.Application, daemon: Daemon) -> None:
    routes = WhepRoutes(daemon)
    # "*" so that every method reaches our dispatch: a 405 must carry CORS headers and Allow.
    app.router.add_route("*", "/whep", routes.endpoint)
    app.router.add_route("*", "/whep/{key}", routes.session)
