"""Remote ICE candidates as signaling carries them: SDP `a=candidate` lines, alone (WebSocket,
as `RTCIceCandidate.toJSON()` gives them) or in a trickle-ice-sdpfrag body (WHEP PATCH, RFC 8840).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from robotcam.webrtc.peers import candidate_problem


class CandidateError(ValueError):
    """A candidate or fragment we cannot read; the message says what is wrong."""


def parse_candidate(text: str, sdp_mid: str | None, sdp_mline_index: int | None) -> RTCIceCandidate | None:
    """One candidate attribute ("candidate:..." or "a=candidate:..."), or None for one aiortc
    cannot use (TCP): RFC 8840 says such candidates are dropped silently."""
    value = text.strip()
    value = value.removeprefix("a=").removeprefix("candidate:")
    bits = value.split()
    if len(bits) < 8 or bits[6] != "typ":
        raise CandidateError(
            f"not an ICE candidate: {text[:120]!r} (expected 'candidate:<foundation> <component> "
            "<transport> <priority> <address> <port> typ <type> ...')"
        )
    try:
        candidate = candidate_from_sdp(value)
    except (ValueError, AssertionError, IndexError) as exc:
        raise CandidateError(f"not an ICE candidate: {text[:120]!r} ({exc or type(exc).__name__})") from None
    if candidate.protocol.lower() != "udp":
        return None
    if problem := candidate_problem(candidate):
        raise CandidateError(f"not a usable ICE candidate: {problem}")
    candidate.sdpMid = sdp_mid
    candidate.sdpMLineIndex = sdp_mline_index
    return candidate


@dataclass
class SdpFragment:
    """What a trickle-ice-sdpfrag body says."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[RTCIceCandidate] = field(default_factory=list)
    end_of_candidates: bool = False


_LINE = re.compile(r"^[a-z]=")


def parse_sdpfrag(body: str) -> SdpFragment:
    """Read an application/trickle-ice-sdpfrag body: ICE credentials, candidates per media
    section (by a=mid, else by m-line position), end-of-candidates."""
    frag = SdpFragment()
    mline = -1
    mid: str | None = None
    for number, raw in enumerate(body.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not _LINE.match(line):
            raise CandidateError(f"line {number} is not an SDP line: {line[:80]!r}")
        if line.startswith("m="):
            mline += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.startswith("a=ice-ufrag:"):
            frag.ufrag = line[len("a=ice-ufrag:"):].strip()
        elif line.startswith("a=ice-pwd:"):
            frag.pwd = line[len("a=ice-pwd:"):].strip()
        elif line.startswith("a=candidate:"):
            candidate = parse_candidate(line, mid, max(mline, 0) if mid is None else None)
            if candidate is not None:
                frag.candidates.append(candidate)
        elif line == "a=end-of-candidates":
            frag.end_of_candidates = True
    return frag
