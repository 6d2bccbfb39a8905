"""The one typed config tree: defaults, YAML loading and validation in one place.

Every key has a default, so an empty file (or none at all) is a valid setup. Validation is
pydantic's, in strict mode (YAML already says what type a value is, so "640" is not a width);
its errors are rewritten into one line per problem, named by dotted key path, all at once.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

DEFAULT_PATH = Path("/etc/robotcam.yaml")

VideoSourceName = Literal["auto", "testpattern", "picamera", "v4l2", "file"]
LogLevel = Literal["debug", "info", "warning", "error"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TLSConfig(Section):
    """HTTPS: browsers give the microphone (talk-back) only to secure pages."""

    cert: str = ""
    key: str = ""

    @model_validator(mode="after")
    def _both_or_neither(self) -> "TLSConfig":
        if bool(self.cert) != bool(self.key):
            raise ValueError("cert and key go together: set both (robotcam gen-cert makes them) or neither")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


class ServerConfig(Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=1, le=65535)
    max_body_bytes: int = Field(65536, ge=4096, le=10 * 1024 * 1024)
    tls: TLSConfig = TLSConfig()


class PicameraConfig(Section):
    """Raspberry Pi camera (picamera2/libcamera) settings; other sources ignore them."""

    camera: int = Field(0, ge=0, le=7)
    autofocus: Literal["default", "manual", "auto", "continuous"] = "default"
    exposure: Literal["normal", "short", "long"] = "normal"
    awb: Literal[
        "auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy"
    ] = "auto"
    controls: dict[str, Any] = {}

    @field_validator("controls")
    @classmethod
    def _control_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Raw libcamera controls (e.g. Brightness: 0.1): numbers, true/false or number lists."""
        def number(v: Any) -> bool:
            return isinstance(v, (int, float))
        for name, control in value.items():
            if not (number(control) or (isinstance(control, list) and control and all(map(number, control)))):
                raise ValueError(
                    f"{name} must be a number, true/false or a list of numbers (got {_show(control)})"
                )
        return value


class RenditionConfig(Section):
    """A lower rung of the ladder, relative to the camera's own settings (so it follows them)."""

    scale: float = Field(0.5, ge=0.1, le=1.0)  # of width and height
    bitrate_ratio: float = Field(0.25, gt=0, le=1.0)  # of video.bitrate
    fps_ratio: float = Field(1.0, gt=0, le=1.0)  # of video.fps


class VideoConfig(Section):
    source: VideoSourceName = "auto"
    device: str = ""
    input_format: str = ""
    file: str = ""
    width: int = Field(640, ge=64, le=4096)
    height: int = Field(480, ge=64, le=4096)
    fps: float = Field(30.0, gt=0, le=120)
    bitrate: int = Field(1_000_000, ge=50_000, le=50_000_000)
    keyframe_interval: float = Field(2.0, ge=0.1, le=60)
    encoder_preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium"
    ] = "ultrafast"
    stall_timeout: float = Field(5.0, ge=0.5, le=300)
    hflip: bool = False
    vflip: bool = False
    rotation: Literal[0, 180] = 0
    encoder: Literal["auto", "libx264", "h264_v4l2m2m"] = "auto"
    picamera: PicameraConfig = PicameraConfig()
    #: viewers whose link is short move down the ladder (lower renditions, encoded once each)
    adaptive: bool = True
    renditions: list[RenditionConfig] = [
        RenditionConfig(scale=0.5, bitrate_ratio=0.25),
        RenditionConfig(scale=0.5, bitrate_ratio=0.1, fps_ratio=0.5),
    ]

    @property
    def flips(self) -> tuple[bool, bool]:
        """(horizontal, vertical) after folding rotation 180 in: a half turn is both flips."""
        half = self.rotation == 180
        return self.hflip != half, self.vflip != half

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be an even number (got {value}): 4:2:0 video halves it")
        return value


class IceServer(Section):
    """One STUN/TURN server, as in the browser's RTCIceServer ({urls, username, credential})."""

    urls: list[str]
    username: str | None = None
    credential: SecretStr | None = None

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValueError(f"must be a URL or a list of URLs (got {_show(value)})")
        return value

    @field_validator("urls")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one URL")
        for url in value:
            if not re.match(r"^(stun|stuns|turn|turns):[^\s]+$", url):
                raise ValueError(
                    f"must start with stun:, stuns:, turn: or turns: (got {url!r})"
                )
        return value


_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


class WebRTCConfig(Section):
    ice_servers: list[IceServer] = []
    max_peers: int = Field(16, ge=1, le=1000)
    host_addresses: list[str] = []
    connect_timeout: float = Field(30.0, ge=1, le=600)
    turn_secret: SecretStr | None = None
    turn_credential_ttl: int = Field(86400, ge=60, le=30 * 86400)
    gather_timeout: float = Field(2.0, ge=0.1, le=30)

    @field_validator("host_addresses")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_address(entry)
            except ValueError:
                if not _INTERFACE_NAME.match(entry):
                    raise ValueError(
                        f"{entry!r} is neither an IP address nor an interface name"
                    ) from None
        return value


class AudioConfig(Section):
    """The robot's microphone to every viewer (Opus)."""

    source: Literal["auto", "microphone", "tone", "none"] = "auto"
    device: str = ""
    sample_rate: int = Field(48000, ge=8000, le=192000)
    channels: int = Field(1, ge=1, le=2)
    block_size: int = Field(960, ge=64, le=48000)
    tone_frequency: float = Field(440.0, ge=20, le=20000)
    stall_timeout: float = Field(3.0, ge=0.5, le=300)


class TalkbackConfig(Section):
    """A viewer's voice to the robot's speaker, one talker at a time."""

    enabled: bool = True
    device: str = ""
    volume: float = Field(1.0, ge=0, le=4)
    max_talk_seconds: float = Field(120.0, ge=1, le=3600)


class ControlConfig(Section):
    """The `control` data channel, bridged to the robot program's Unix socket. Off by default."""

    enabled: bool = False
    socket: str = "/run/robotcam/control.sock"
    max_message_bytes: int = Field(4096, ge=64, le=65536)
    max_messages_per_second: float = Field(50.0, ge=1, le=1000)


class SnapshotConfig(Section):
    """GET /snapshot.jpg: the latest picture, JPEG-encoded only when asked for."""

    quality: int = Field(85, ge=1, le=100)


class MjpegConfig(Section):
    """GET /stream.mjpg: one shared JPEG encoder while at least one client watches."""

    fps: float = Field(10.0, gt=0, le=30)
    quality: int = Field(75, ge=1, le=100)
    max_clients: int = Field(8, ge=1, le=100)


class RecordingConfig(Section):
    """The camera's H.264 written as it is into fragmented MP4 segments, oldest deleted first."""

    enabled: bool = False
    path: str = "/var/lib/robotcam/recordings"
    segment_seconds: float = Field(60.0, ge=1, le=3600)
    max_bytes: int = Field(4_000_000_000, ge=0)  # 0: no byte limit
    max_age: float = Field(7 * 86400.0, ge=0)  # seconds; 0: no age limit


class LoggingConfig(Section):
    level: LogLevel = "info"


Permission = Literal["view", "talk", "control", "metrics", "admin"]
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class _Grant(Section):
    """A named holder of permissions (a user or a token): the name shows in logs and /health."""

    name: str
    permissions: list[Permission] = ["view"]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid name: 1-64 letters, digits, '.', '_', '-' or '@'"
            )
        return value


class UserEntry(_Grant):
    """A person who signs in on the page (or with HTTP requests to /api/login)."""

    #: argon2id, from `robotcam hash-password`; never the password itself
    password_hash: SecretStr

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: SecretStr) -> SecretStr:
        from argon2 import extract_parameters
        from argon2.exceptions import InvalidHashError

        text = value.get_secret_value()
        try:
            if not text.startswith("$argon2id$"):
                raise InvalidHashError(text)
            extract_parameters(text)
        except (InvalidHashError, ValueError):
            raise ValueError(
                "not an argon2id hash: make one with `robotcam hash-password` "
                "(it starts with $argon2id$)"
            ) from None
        return value


class TokenEntry(_Grant):
    """A bearer token for a player or a program (OBS, a WHEP player, Prometheus)."""

    #: SHA-256 of the token, 64 hex digits (`robotcam new-token` prints it); never the token
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError(
                "must be the SHA-256 of the token, 64 hex digits (robotcam new-token prints it)"
            )
        return value.lower()


class AuthConfig(Section):
    """Who may watch, talk and drive (README, Security)."""

    enabled: bool = True
    users: list[UserEntry] = []
    tokens: list[TokenEntry] = []
    anonymous: list[Permission] = []
    allowed_origins: list[str] = []
    session_idle_timeout: float = Field(7 * 86400.0, ge=60, le=365 * 86400)
    session_max_age: float = Field(30 * 86400.0, ge=60, le=365 * 86400)
    max_failed_logins: int = Field(5, ge=1, le=1000)
    lockout_seconds: float = Field(30.0, ge=1, le=86400)
    offers_per_minute: int = Field(120, ge=0, le=100000)
    state_directory: str = ""

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], e.g. https://dash.example.org"
                )
        return [origin.lower() for origin in value]

    @model_validator(mode="after")
    def _unique_names(self) -> "AuthConfig":
        for kind, entries in (("users", self.users), ("tokens", self.tokens)):
            seen: set[str] = set()
            for index, entry in enumerate(entries):
                if entry.name in seen:
                    raise ValueError(f"{kind}[{index}].name: duplicate name {entry.name!r}")
                seen.add(entry.name)
        hashes = [t.sha256 for t in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("tokens: two tokens have the same sha256")
        return self


CAMERA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
DEFAULT_CAMERA = "main"  # the one camera made from `video:` alone when `cameras:` is absent


def device_of(video: VideoConfig) -> tuple[str, str] | None:
    """(key, what) naming the device a camera opens, for the one-camera-per-device check: a
    V4L2 path or a Pi camera index. Test patterns and files are no device (two may share)."""
    if video.source == "picamera":
        return "picamera.camera", f"Pi camera {video.picamera.camera}"
    if video.source in ("v4l2", "auto") and video.device:
        return "device", video.device
    return None



def mask_url(url: str) -> str:
    """A URL safe for logs and /health: no password in userinfo, no query values (stream keys
    and tokens often ride there)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':')[0]}:***@{host}" if ":" in user else f"***@{host}"
    query = "&".join(
        f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair
        for pair in parts.query.split("&") if pair
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class PublishEntry(Section):
    """One media server robotcam sends its stream to over WHIP (RFC 9725), for audiences
    beyond the robot's own uplink (README, Many viewers)."""

    url: str
    #: sent as "Authorization: Bearer <token>"; masked by `robotcam config`
    token: SecretStr | None = None
    camera: str = ""
    audio: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"must be an http:// or https:// WHIP endpoint URL (got {value!r}), "
                "e.g. http://mediamtx:8889/robot7/whip"
            )
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> "PublishEntry":
        from urllib.parse import urlsplit

        if self.token is not None and urlsplit(self.url).password is not None:
            raise ValueError(
                "token: give either a token (Authorization: Bearer) or user:password in the URL, not both"
            )
        return self

    @field_serializer("url", when_used="json")
    def _masked(self, value: str) -> str:
        """`robotcam config`, reload log lines: no secret from the URL either."""
        return mask_url(value)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)


class Config(Section):
    server: ServerConfig = ServerConfig()
    video: VideoConfig = VideoConfig()
    audio: AudioConfig = AudioConfig()
    talkback: TalkbackConfig = TalkbackConfig()
    webrtc: WebRTCConfig = WebRTCConfig()
    control: ControlConfig = ControlConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    mjpeg: MjpegConfig = MjpegConfig()
    recording: RecordingConfig = RecordingConfig()
    logging: LoggingConfig = LoggingConfig()
    auth: AuthConfig = AuthConfig()
    publish: list[PublishEntry] = []
    #: name -> that camera's settings: `video:` with the camera's own keys laid over it (merged
    #: before validation, so an error names `cameras.arm.device`). Empty: one camera, "main".
    cameras: dict[str, VideoConfig] = {}

    @model_validator(mode="after")
    def _unique_publish_urls(self) -> "Config":
        seen: set[str] = set()
        for index, entry in enumerate(self.publish):
            if entry.url in seen:
                raise ValueError(f"publish[{index}].url: {entry.masked_url} is listed twice")
            seen.add(entry.url)
            if entry.camera and entry.camera not in self.camera_configs():
                raise ValueError(
                    f"publish[{index}].camera: unknown camera {entry.camera!r}: known cameras are "
                    f"{', '.join(self.camera_configs())} (empty = the first)"
                )
        return self

    @model_validator(mode="after")
    def _cameras(self) -> "Config":
        """Names a URL can carry; one camera per device (two cannot open one V4L2 node)."""
        owner: dict[str, str] = {}
        for name, video in self.cameras.items():
            if not CAMERA_NAME.match(name):
                raise ValueError(
                    f"cameras: {name!r} is not a camera name: use 1-32 letters, digits, '-' or '_'"
                )
            device = device_of(video)
            if device is None:
                continue
            key, what = device
            if what in owner:
                raise ValueError(f"cameras.{name}.{key}: {what} is already used by camera {owner[what]!r}")
            owner[what] = name
        return self

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """`video:` with every key under it commented out is YAML null: use the defaults. Each
        camera is `video:` with its own keys laid over it (`picamera:` merged key by key)."""
        if not isinstance(data, dict):
            return data
        data = {key: value for key, value in data.items() if value is not None}
        cameras = data.get("cameras")
        if isinstance(cameras, dict):
            video = data.get("video", {})
            base = video.model_dump() if isinstance(video, VideoConfig) else video
            if isinstance(base, dict):
                data["cameras"] = {name: _overlay(base, own) for name, own in cameras.items()}
        return data

    def camera_configs(self) -> dict[str, VideoConfig]:
        """Every camera by name, in config order: `cameras:`, or "main" made from `video:`."""
        return dict(self.cameras) if self.cameras else {DEFAULT_CAMERA: self.video}

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data, secrets replaced by asterisks."""
        return self.model_dump(mode="json")


def _overlay(base: dict[str, Any], own: Any) -> Any:
    """A camera's settings: `video:` (base) with the camera's keys on top. Not a mapping (an
    error to report as it is) or a camera given as a model (already whole) stays as it is."""
    if isinstance(own, VideoConfig):
        return own
    if own is None:
        own = {}
    if not isinstance(own, dict):
        return own
    merged = {**base, **own}
    if isinstance(base.get("picamera"), dict) and isinstance(own.get("picamera"), dict):
        merged["picamera"] = {**base["picamera"], **own["picamera"]}
    return merged


class ConfigError(Exception):
    """Every problem found in one config source, each naming its key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.__str__())

    def __str__(self) -> str:
        lines = "\n".join(f"  {p}" for p in self.problems)
        count = len(self.problems)
        return f"{self.source}: {count} problem{'s' if count != 1 else ''}\n{lines}"


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a validated Config, or raise ConfigError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [_yaml_problem(exc)]) from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML's own converters raise these, e.g. a date that does not exist (2026-13-45)
        raise ConfigError(source, [f"(YAML) a value cannot be read: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            [f"(top level): must be a mapping of sections such as 'video:' (got {_type_name(data)})"],
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        errors = [err for err in exc.errors() if not _inherited(err, data)]
        raise ConfigError(source, [_problem(err) for err in errors]) from None


def _inherited(err: Any, data: dict[str, Any]) -> bool:
    """An error in a key a camera took from `video:`: `video.<key>` reports it once."""
    loc = tuple(err["loc"])
    if len(loc) < 3 or loc[0] != "cameras":
        return False
    own = (data.get("cameras") or {}).get(loc[1])
    return isinstance(own, dict) and loc[2] not in own


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load a config file; None means built-in defaults."""
    if path is None:
        return Config()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["cannot read file: not UTF-8 text"]) from None
    config = parse_config(text, str(path))
    # relative paths are relative to the config file, not to wherever the daemon was started
    # (/ under systemd)
    def anchored(video: VideoConfig) -> VideoConfig:
        if video.file and not Path(video.file).is_absolute():
            return video.model_copy(update={"file": str(Path(path).parent / video.file)})
        return video
    config = config.model_copy(update={
        "video": anchored(config.video),
        "cameras": {name: anchored(video) for name, video in config.cameras.items()},
    })
    if not Path(config.recording.path).is_absolute():
        recording = config.recording.model_copy(
            update={"path": str(Path(path).parent / config.recording.path)})
        config = config.model_copy(update={"recording": recording})
    return config


def default_path() -> Path | None:
    """/etc/robotcam.yaml when it exists, else None (built-in defaults)."""
    return DEFAULT_PATH if DEFAULT_PATH.exists() else None


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(config.masked(), sort_keys=False, default_flow_style=False)


# --- error messages ------------------------------------------------------------------------

def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
    return f"(YAML syntax) {where}: {problem}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", bool: "true/false",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML: text quoted, containers by kind only."""
    if isinstance(value, (dict, list)) or value is None:
        return _type_name(value)
    if isinstance(value, str):
        return f"text {value!r}"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return yaml.safe_dump(value).strip().removesuffix("...").strip()


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at loc, to suggest its real field names."""
    model: Any = Config
    skip_name = False
    for part in loc:
        if isinstance(part, int) or skip_name:
            skip_name = False
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
        if get_origin(model) is list:
            model = get_args(model)[0]
        elif get_origin(model) is dict:  # cameras: the next part is a name, then its keys
            model = get_args(model)[1]
            skip_name = True
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


# Names people reach for that mean one of ours (RTCIceServer calls the password "credential").
_SYNONYMS = {
    "password": "credential", "secret": "credential", "url": "urls", "user": "username",
    "framerate": "fps", "frame_rate": "fps", "resolution": "width", "gop": "keyframe_interval",
    "address": "host", "listen": "host", "level": "level", "loglevel": "level",
}


def _suggest(key: str, names: list[str]) -> str:
    hint = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not hint:
        synonym = difflib.get_close_matches(key.lower(), list(_SYNONYMS), n=1, cutoff=0.75)
        hint = [_SYNONYMS[synonym[0]]] if synonym and _SYNONYMS[synonym[0]] in names else []
    return f"did you mean '{hint[0]}'?" if hint else f"known keys: {', '.join(names)}"


def _problem(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = _dotted(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = list(model.model_fields) if model else []
        return f"{key}: unknown key ({_suggest(str(loc[-1]), names)})"
    if kind == "literal_error":
        return f"{key}: must be one of {ctx.get('expected', '')} (got {value!r})"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        word = {"greater_than_equal": "at least", "greater_than": "more than",
                "less_than_equal": "at most", "less_than": "less than"}[kind]
        bound = next(iter(ctx.values()))
        return f"{key}: must be {word} {_show(bound)} (got {_show(value)})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{key}: must be a mapping of keys (got {_type_name(value)})"
    expected = {
        "int_type": "an integer", "int_from_float": "a whole number",
        "float_type": "a number", "string_type": "text", "bool_type": "true or false",
        "list_type": "a list",
    }.get(kind)
    if expected:
        return f"{key}: must be {expected} (got {_show(value)})"
    if kind == "value_error":
        message = err["msg"].removeprefix("Value error, ")
        # a section's own check may name the key inside it: "users[1].name: duplicate ..."
        inner = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[A-Za-z0-9_-]+)*): (.*)$", message, re.S)
        if inner:
            return f"{_dotted(loc + (inner.group(1),))}: {inner.group(2)}"
        return f"{key}: {message}"
    if kind == "missing":
        return f"{key}: is required"
    return f"{key}: {err['msg']} (got {_show(value)})"
