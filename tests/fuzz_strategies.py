"""Hypothesis strategies for the fuzz targets: hostile HTTP bodies and headers, SDP offers
mutated from real ones, trickle-ICE fragments, WebSocket message sequences, YAML configs."""

from __future__ import annotations

import json
import re
from typing import Any, get_args, get_origin

import yaml
from hypothesis import strategies as st

from robotcam.config import Config

# A Chrome 120 offer (audio, video, data channel), as a page on the robot sends it; the aiortc
# offers come from real aiortc peer connections at run time.
CHROME_OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1 2",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1840965416 1 udp 2122260223 127.0.0.1 51234 typ host generation 0 network-id 1",
    "a=ice-ufrag:pLcY",
    "a=ice-pwd:1p3Qw8v0YNtVb5o+7bHk3m2L",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:- 0b2b7a2e-1c2f-4d2f-9a1e-5d8e3c7f6a10",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:3735928559 cname:Yq3nX0bq9D7p2Tk1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 45 46 98 99 100 101 112 113 116 117 118",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:pLcY",
    "a=ice-pwd:1p3Qw8v0YNtVb5o+7bHk3m2L",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:13 urn:3gpp:video-orientation",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 goog-remb",
    "a=rtcp-fb:102 transport-cc",
    "a=rtcp-fb:102 ccm fir",
    "a=rtcp-fb:102 nack",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=rtpmap:104 H264/90000",
    "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f",
    "a=rtpmap:105 rtx/90000",
    "a=fmtp:105 apt=104",
    "a=rtpmap:106 H264/90000",
    "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:107 rtx/90000",
    "a=fmtp:107 apt=106",
    "a=rtpmap:108 H264/90000",
    "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
    "a=rtpmap:109 rtx/90000",
    "a=fmtp:109 apt=108",
    "a=rtpmap:127 H264/90000",
    "a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    "a=rtpmap:125 rtx/90000",
    "a=fmtp:125 apt=127",
    "a=rtpmap:45 AV1/90000",
    "a=fmtp:45 level-idx=5;profile=0;tier=0",
    "a=rtpmap:46 rtx/90000",
    "a=fmtp:46 apt=45",
    "a=rtpmap:98 VP9/90000",
    "a=fmtp:98 profile-id=0",
    "a=rtpmap:99 rtx/90000",
    "a=fmtp:99 apt=98",
    "a=rtpmap:100 VP9/90000",
    "a=fmtp:100 profile-id=2",
    "a=rtpmap:101 rtx/90000",
    "a=fmtp:101 apt=100",
    "a=rtpmap:112 H264/90000",
    "a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f",
    "a=rtpmap:113 rtx/90000",
    "a=fmtp:113 apt=112",
    "a=rtpmap:116 red/90000",
    "a=rtpmap:117 rtx/90000",
    "a=fmtp:117 apt=116",
    "a=rtpmap:118 ulpfec/90000",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:pLcY",
    "a=ice-pwd:1p3Qw8v0YNtVb5o+7bHk3m2L",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "a=setup:actpass",
    "a=mid:2",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
    "",
])

NUMBERS = st.one_of(
    st.sampled_from([-1, 0, 1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**63, 2**64 + 1, 10**40]),
    st.integers(),
)
ODD_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)  # any code point but surrogates
NUMBER = re.compile(r"\d+")


@st.composite
def mutated_sdp(draw: Any, bases: list[str]) -> str:
    """A real offer with lines dropped, duplicated, reordered, numbers out of range, a line
    repeated many times, odd characters, other line endings, or cut short."""
    lines = draw(st.sampled_from(bases)).strip("\r\n").split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        op = draw(st.sampled_from(["drop", "dup", "swap", "number", "repeat", "odd", "truncate", "replace"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "number":
            matches = list(NUMBER.finditer(lines[i]))
            if matches:
                m = matches[draw(st.integers(0, len(matches) - 1))]
                lines[i] = lines[i][: m.start()] + str(draw(NUMBERS)) + lines[i][m.end():]
        elif op == "repeat":
            lines[i:i + 1] = [lines[i]] * draw(st.sampled_from([2, 10, 100, 1000, 5000]))
        elif op == "odd":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(ODD_TEXT) + lines[i][at:]
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        else:
            prefix = lines[i].split(":", 1)[0] if ":" in lines[i] else lines[i][:2]
            lines[i] = prefix + ":" + draw(ODD_TEXT)
    ending = draw(st.sampled_from(["\r\n", "\n", "\r", "\r\n\r\n"]))
    return ending.join(lines) + draw(st.sampled_from([ending, ""]))


JSON_SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.floats(allow_nan=False), ODD_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(ODD_TEXT, inner, max_size=4), max_leaves=12)


def json_bodies(keys: dict[str, Any]) -> Any:
    """Request bodies: raw bytes, text, any JSON, and objects with the expected keys holding
    anything (or the right thing), so both the parser and the checks behind it are reached."""
    shaped = st.fixed_dictionaries({}, optional={k: st.one_of(v, JSON_VALUES) for k, v in keys.items()})
    extra = st.dictionaries(ODD_TEXT, JSON_VALUES, max_size=2)
    objects = st.tuples(shaped, extra).map(lambda pair: {**pair[1], **pair[0]})
    return st.one_of(
        st.binary(max_size=200),
        ODD_TEXT.map(lambda t: t.encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
        objects.map(lambda v: json.dumps(v).encode()),
        objects.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-16")),
    )


# Header values http.client will send (no CR/LF, latin-1), and names that are HTTP tokens.
HEADER_VALUES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=80)
HEADER_NAMES = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
CONTENT_TYPES = st.one_of(st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/json; charset=latin-1",
    "application/sdp", "application/trickle-ice-sdpfrag", "text/plain", "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded", "", "*/*", "application/json; charset=nonsense",
]), HEADER_VALUES)


def headers(extra: dict[str, Any] | None = None) -> Any:
    """Random headers plus, sometimes, each of `extra`'s (name -> value strategy)."""
    named = st.fixed_dictionaries({}, optional=extra or {})
    other = st.dictionaries(HEADER_NAMES.filter(lambda n: n.lower() not in ("content-length", "transfer-encoding", "host", "connection", "upgrade", "expect")),
                            HEADER_VALUES, max_size=3)
    return st.tuples(other, named).map(lambda pair: {**pair[0], **pair[1]})


CANDIDATE_LINES = st.one_of(
    st.sampled_from([
        "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host",
        "a=candidate:1 1 tcp 2122260223 127.0.0.1 9 typ host tcptype passive",
        "a=candidate:2 1 udp 1686052607 203.0.113.1 61000 typ srflx raddr 127.0.0.1 rport 9",
        "a=candidate:3 1 udp 41885439 198.51.100.1 3478 typ relay raddr 0.0.0.0 rport 0",
        "a=candidate:4 1 udp 2122260223 ::1 9 typ host",
        "a=candidate:5 1 udp 2122260223 abc.local 9 typ host",
        "a=end-of-candidates",
    ]),
    st.tuples(st.integers(), NUMBERS, st.sampled_from(["udp", "tcp", "UDP", "sctp", ""]), NUMBERS,
              st.sampled_from(["127.0.0.1", "::1", "999.1.1.1", "", "x" * 300, "0.0.0.0"]), NUMBERS,
              st.sampled_from(["host", "srflx", "relay", "prflx", "bogus", ""])).map(
        lambda c: f"a=candidate:{c[0]} {c[1]} {c[2]} {c[3]} {c[4]} {c[5]} typ {c[6]}"),
    ODD_TEXT.map(lambda t: "a=candidate:" + t),
)


@st.composite
def sdpfrags(draw: Any, ufrag: str, pwd: str) -> str:
    """trickle-ice-sdpfrag bodies (RFC 8840): right or wrong credentials, candidates, noise."""
    lines = [f"a=ice-ufrag:{draw(st.sampled_from([ufrag, 'other', '']) | ODD_TEXT)}",
             f"a=ice-pwd:{draw(st.sampled_from([pwd, 'x']) | ODD_TEXT)}",
             draw(st.sampled_from(["m=video 9 UDP/TLS/RTP/SAVPF 0", "m=audio 9 RTP/AVP 0", "m=", "m=video x y z"])),
             draw(st.sampled_from(["a=mid:0", "a=mid:1", "a=mid:", "a=mid:99"]) | ODD_TEXT.map(lambda t: "a=mid:" + t))]
    lines += draw(st.lists(CANDIDATE_LINES, max_size=5))
    lines = draw(st.permutations(lines)) if draw(st.booleans()) else lines
    if draw(st.booleans()):
        del lines[draw(st.integers(0, len(lines) - 1))]
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines) + "\r\n"


def config_sections() -> dict[str, list[str]]:
    """Every real section and key name, so generated configs reach the validators (a list
    section, such as `publish`, by its entries' keys; a mapping of named entries, such as
    `cameras`, by its entries' keys too)."""
    sections = {}
    for name, field in Config.model_fields.items():
        model = field.annotation
        if get_origin(model) in (list, dict):
            model = get_args(model)[-1]
        sections[name] = list(model.model_fields)
    return sections


NAMED_SECTIONS = {name for name, field in Config.model_fields.items() if get_origin(field.annotation) is dict}


@st.composite
def yaml_configs(draw: Any) -> str:
    """YAML text: arbitrary text, arbitrary YAML, and configs with real keys holding anything."""
    sections = config_sections()
    kind = draw(st.sampled_from(["text", "yaml", "keys"]))
    if kind == "text":
        return draw(st.one_of(ODD_TEXT, st.text(":-[]{}&*!|>'\"%@`#,? \n\t0123456789abcnul~.", max_size=80)))
    if kind == "yaml":
        return yaml.safe_dump(draw(JSON_VALUES), allow_unicode=True)
    config: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(sections)), max_size=3, unique=True)):
        keys = draw(st.lists(st.sampled_from(sections[section] + ["nonsense"]), max_size=3, unique=True))
        value = draw(st.one_of(st.fixed_dictionaries({k: JSON_VALUES for k in keys}), JSON_SCALARS))
        if section in NAMED_SECTIONS:  # cameras: {name: {keys}}, names right or wrong
            value = {draw(st.sampled_from(["front", "arm-2", "a b", ""]) | ODD_TEXT): value}
        config[section] = value
    text = yaml.safe_dump(config, allow_unicode=True)
    if draw(st.booleans()):  # YAML's own features: anchors, tags, odd scalars
        text += draw(st.sampled_from(["x: &a [*a]\n", "y: !!python/object:os.system x\n", "z: !!binary '###'\n",
                                      "<<: {a: 1}\n", "? [a]\n: b\n", "w: 1e999\n", "v: .nan\n", "u: 0x10\n",
                                      "t: 2026-13-45\n", "%YAML 1.3\n---\n", "---\n---\n", "\t:\n"]))
    return text
