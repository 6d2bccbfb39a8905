"""The WHIP client protocol (RFC 9725), over aiohttp's client; no media here.

    OPTIONS endpoint        -> Link: <stun:...>; rel="ice-server" (optional, before the offer)
    POST endpoint           application/sdp offer, Authorization: Bearer <token>
                            -> 201 Created, the answer, Location: the session's resource URL,
                               ETag, Link rel="ice-server", Accept-Patch (trickle allowed)
    PATCH resource          application/trickle-ice-sdpfrag (only when the server allows it)
    DELETE resource         end the session

Redirects (307/308) are followed with the method and body kept; a relative Location resolves
against the URL that answered. Errors are sorted by what the publisher should do about them:
a 4xx other than 429 is the user's configuration (wrong URL, token, path): retrying soon will
not help; 429 and 503 say when to come back (Retry-After); anything else is transient.
"""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from yarl import URL

log = logging.getLogger(__name__)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_ANSWER_BYTES = 256 * 1024
MAX_RETRY_AFTER = 3600.0  # seconds: a server asking for more is capped to an hour

ErrorKind = Literal["config", "busy", "transient"]


class WhipError(Exception):
    """A WHIP request that failed. `kind`: config (a 4xx the user must fix), busy (429/503:
    come back after `retry_after`), transient (network, 5xx, a garbled answer)."""

    def __init__(
        self, message: str, kind: ErrorKind = "transient", status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class IceServerLink:
    """A STUN/TURN server from a `Link: <...>; rel="ice-server"` header (RFC 9725 §4.6)."""

    url: str
    username: str | None = None
    credential: str | None = None


@dataclass
class WhipResource:
    """A session the server created: where it lives and what it answered."""

    url: str
    answer: str
    etag: str | None = None
    ice_servers: list[IceServerLink] = field(default_factory=list)
    trickle: bool = False  # the server accepts PATCH with trickle-ice-sdpfrag


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def ice_server_links(response: aiohttp.ClientResponse) -> list[IceServerLink]:
    """Every rel="ice-server" Link of a response, in order (aiohttp parses the header)."""
    servers = []
    for link in response.links.getall("ice-server", []):
        url = str(link.get("url", ""))
        if url.startswith(("stun:", "stuns:", "turn:", "turns:")):
            servers.append(IceServerLink(url, link.get("username"), link.get("credential")))
    return servers


def _error(status: int, what: str, response: aiohttp.ClientResponse, body: str) -> WhipError:
    detail = body.strip().replace("\n", " ")[:200]
    message = f"{what} answered {status} {response.reason or ''}".rstrip() + (f": {detail}" if detail else "")
    if status in (429, 503):
        return WhipError(message, "busy", status, parse_retry_after(response.headers.get("Retry-After")))
    if 400 <= status < 500:
        hint = {
            401: " (check publish[].token)", 403: " (check publish[].token)",
            404: " (check publish[].url: no such WHIP endpoint or stream path)",
        }.get(status, "")
        return WhipError(message + hint, "config", status)
    return WhipError(message, "transient", status)


class WhipClient:
    """One WHIP endpoint. The caller owns the aiohttp session (its sockets)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    def _headers(self, content_type: str | None = None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> tuple[aiohttp.ClientResponse, str]:
        try:
            async with self.http.request(method, url, timeout=self.timeout, **kwargs) as response:
                body = await response.content.read(MAX_ANSWER_BYTES)
                return response, body.decode("utf-8", "replace")
        except aiohttp.TooManyRedirects:
            raise WhipError(f"{what}: too many redirects") from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise WhipError(f"{what}: cannot reach the server: {reason}") from None

    async def ice_servers(self) -> list[IceServerLink]:
        """What an OPTIONS request lists (RFC 9725 §4.6 lets a server answer it); [] when the
        server does not (many answer 404/405): the answer to POST lists them again."""
        try:
            response, _ = await self._request("OPTIONS", self.url, "OPTIONS", headers=self._headers())
        except WhipError as exc:
            log.debug("WHIP OPTIONS %s: %s", self.url, exc)
            return []
        return ice_server_links(response) if response.status < 300 else []

    async def publish(self, offer: str) -> WhipResource:
        """POST the offer; the created session, or a WhipError saying what to do."""
        response, body = await self._request(
            "POST", self.url, "POST", data=offer.encode(), headers=self._headers(SDP),
            allow_redirects=True,
        )
        if response.status != 201:
            if response.status < 400:
                raise WhipError(
                    f"POST answered {response.status} instead of 201 Created: not a WHIP endpoint?",
                    "config" if response.status < 300 else "transient", response.status,
                )
            raise _error(response.status, "POST", response, body)
        location = response.headers.get("Location")
        if not location:
            raise WhipError("POST answered 201 without a Location header: not a WHIP endpoint?", status=201)
        if not body.lstrip().startswith("v=0"):
            raise WhipError(f"POST answered 201 but the body is not an SDP answer: {body[:80]!r}", status=201)
        patch = response.headers.get("Accept-Patch", "")
        return WhipResource(
            url=str(response.url.join(URL(location))),  # relative to the URL that answered
            answer=body,
            etag=response.headers.get("ETag"),
            ice_servers=ice_server_links(response),
            trickle=SDPFRAG in patch.lower(),
        )

    async def trickle(self, resource: WhipResource, fragment: str) -> None:
        """PATCH a trickle-ice-sdpfrag to the session (only when resource.trickle)."""
        extra = {"If-Match": resource.etag} if resource.etag else {}
        response, body = await self._request(
            "PATCH", resource.url, "PATCH", data=fragment.encode(), headers=self._headers(SDPFRAG, **extra),
        )
        if response.status not in (200, 204):
            raise _error(response.status, "PATCH", response, body)

    async def delete(self, resource: WhipResource) -> None:
        """End the session on the server (a 404 means it is gone already: fine)."""
        response, body = await self._request("DELETE", resource.url, "DELETE", headers=self._headers())
        if response.status >= 300 and response.status != 404:
            raise _error(response.status, "DELETE", response, body)
