"""The config tree: defaults, the shipped file, every kind of bad input, and the CLI around it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robotcam import __version__
from robotcam.cli import main
from robotcam.config import Config, ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config" / "robotcam.yaml"


def test_no_file_is_a_valid_setup_with_the_documented_defaults() -> None:
    config = load_config(None)
    assert config == Config()
    assert (config.server.host, config.server.port) == ("0.0.0.0", 8080)
    assert config.video.source == "auto"
    assert (config.video.width, config.video.height, config.video.fps) == (640, 480, 30)
    assert config.webrtc.ice_servers == [] and config.webrtc.host_addresses == []
    assert config.logging.level == "info"


def test_shipped_config_loads_equal_to_no_file_at_all() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_lists_every_key() -> None:
    shipped = yaml.safe_load(SHIPPED.read_text())
    defaults = Config().model_dump(mode="json")
    assert {s: set(v) for s, v in shipped.items()} == {s: set(v) for s, v in defaults.items()}


def test_empty_file_and_empty_sections_are_defaults() -> None:
    assert parse_config("") == Config()
    assert parse_config("# only a comment\n") == Config()
    assert parse_config("video: {}") == Config()
    # a section whose keys are all commented out is YAML null
    assert parse_config("video: {}\nserver:\n  # port: 8080\n") == Config()


def test_values_are_read() -> None:
    config = parse_config(
        "server: {port: 9000}\n"
        "video: {source: testpattern, width: 1280, height: 720, fps: 25, bitrate: 2500000}\n"
        "webrtc:\n"
        "  ice_servers:\n"
        "    - urls: stun:stun.example.org:3478\n"
        "    - {urls: [turn:t.example.org:3478], username: u, credential: s3cret}\n"
        "  host_addresses: [192.168.1.20, wlan0]\n"
    )
    assert config.server.port == 9000
    assert config.video.fps == 25.0
    assert config.webrtc.ice_servers[0].urls == ["stun:stun.example.org:3478"]
    assert config.webrtc.ice_servers[1].credential.get_secret_value() == "s3cret"
    assert config.webrtc.host_addresses == ["192.168.1.20", "wlan0"]


# (YAML text, the exact messages it gets: every problem, at once)
BAD_YAML: list[tuple[str, list[str]]] = [
    ("video: {renditions: [{scale: 2}]}", ["video.renditions[0].scale: must be at most 1 (got 2)"]),
    ("video: {renditions: [{bitrate_ratio: 0, fps: 5}]}", [
        "video.renditions[0].bitrate_ratio: must be more than 0 (got 0)",
        "video.renditions[0].fps: unknown key (known keys: scale, bitrate_ratio, fps_ratio)"]),
    ("video: {adaptive: maybe}", ["video.adaptive: must be true or false (got text 'maybe')"]),
    ("server:\n  port: [", ["(YAML syntax) line 2, column 10: expected the node content, but found '<stream end>'"]),
    ("server:\n\tport: 80", ["(YAML syntax) line 2, column 1: found character '\\t' that cannot start any token"]),
    ("- video\n- server", ["(top level): must be a mapping of sections such as 'video:' (got a list)"]),
    ("just text", ["(top level): must be a mapping of sections such as 'video:' (got text)"]),
    ("vidoe: {fps: 30}", ["vidoe: unknown key (did you mean 'video'?)"]),
    ("video: {fsp: 30}", ["video.fsp: unknown key (did you mean 'fps'?)"]),
    ("video: {colour: red}", ["video.colour: unknown key (known keys: source, device, input_format, file, width, height, fps, bitrate, keyframe_interval, encoder_preset, stall_timeout, hflip, vflip, rotation, encoder, picamera, adaptive, renditions)"]),
    ("video: [640, 480]", ["video: must be a mapping of keys (got a list)"]),
    ("video: {width: '640'}", ["video.width: must be an integer (got text '640')"]),
    ("video: {width: 640.5}", ["video.width: must be an integer (got 640.5)"]),
    ("video: {width: 641}", ["video.width: must be an even number (got 641): 4:2:0 video halves it"]),
    ("video: {fps: 500}", ["video.fps: must be at most 120 (got 500)"]),
    ("video: {fps: 0}", ["video.fps: must be more than 0 (got 0)"]),
    ("video: {bitrate: true}", ["video.bitrate: must be an integer (got true)"]),
    ("video: {source: webcam}", ["video.source: must be one of 'auto', 'testpattern', 'picamera', 'v4l2' or 'file' (got 'webcam')"]),
    ("server: {port: 70000}", ["server.port: must be at most 65535 (got 70000)"]),
    ("server: {port: null}", ["server.port: must be an integer (got nothing)"]),
    ("logging: {level: loud}", ["logging.level: must be one of 'debug', 'info', 'warning' or 'error' (got 'loud')"]),
    ("webrtc: {ice_servers: {urls: 'stun:x'}}", ["webrtc.ice_servers: must be a list (got a mapping)"]),
    ("webrtc: {ice_servers: [{urls: 'http://x'}]}", ["webrtc.ice_servers[0].urls: must start with stun:, stuns:, turn: or turns: (got 'http://x')"]),
    ("webrtc: {ice_servers: [{urls: 5}]}", ["webrtc.ice_servers[0].urls: must be a URL or a list of URLs (got 5)"]),
    ("webrtc: {ice_servers: [{username: u}]}", ["webrtc.ice_servers[0].urls: is required"]),
    ("webrtc: {ice_servers: [{urls: 'stun:x', pasword: p}]}", ["webrtc.ice_servers[0].pasword: unknown key (did you mean 'credential'?)"]),
    ("webrtc: {ice_servers: [{url: 'stun:x'}]}", ["webrtc.ice_servers[0].urls: is required", "webrtc.ice_servers[0].url: unknown key (did you mean 'urls'?)"]),
    ("video: {framerate: 25}", ["video.framerate: unknown key (did you mean 'fps'?)"]),
    ("video: {rotation: 90}", ["video.rotation: must be one of 0 or 180 (got 90)"]),
    ("video: {hflip: yes please}", ["video.hflip: must be true or false (got text 'yes please')"]),
    ("video: {picamera: {awb: sunny}}", ["video.picamera.awb: must be one of 'auto', 'incandescent', 'tungsten', 'fluorescent', 'indoor', 'daylight' or 'cloudy' (got 'sunny')"]),
    ("video: {picamera: {controls: {Brightness: bright}}}", ["video.picamera.controls: Brightness must be a number, true/false or a list of numbers (got text 'bright')"]),
    ("video: {picamera: {focus: auto}}", ["video.picamera.focus: unknown key (did you mean 'autofocus'?)"]),
    ("webrtc: {host_addresses: ['not an address!']}", ["webrtc.host_addresses: 'not an address!' is neither an IP address nor an interface name"]),
    (
        "video: {fps: 500, width: 7}\nserver: {prot: 80}\nlogging: {level: 3}",
        [
            "server.prot: unknown key (did you mean 'port'?)",
            "video.width: must be at least 64 (got 7)",
            "video.fps: must be at most 120 (got 500)",
            "logging.level: must be one of 'debug', 'info', 'warning' or 'error' (got 3)",
        ],
    ),
]


@pytest.mark.parametrize("text,messages", BAD_YAML, ids=[t for t, _ in BAD_YAML])
def test_bad_yaml_gets_exact_messages(text: str, messages: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "robot.yaml")
    assert caught.value.problems == messages
    assert str(caught.value).startswith(f"robot.yaml: {len(messages)} problem")


def test_relative_video_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "robotcam.yaml"
    path.write_text("video: {source: file, file: clips/demo.mp4}\n")
    assert load_config(path).video.file == str(tmp_path / "clips" / "demo.mp4")
    path.write_text("video: {source: file, file: /srv/demo.mp4}\n")
    assert load_config(path).video.file == "/srv/demo.mp4"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


# --- the CLI --------------------------------------------------------------------------------

def test_check_config_prints_every_problem_and_exits_1(tmp_path: Path, capsys) -> None:
    path = tmp_path / "robotcam.yaml"
    path.write_text("video: {fps: 500, width: 7}\nserver: {prot: 80}\n")
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "3 problems" in err
    for key in ("server.prot", "video.width", "video.fps"):
        assert key in err
    assert main(["check-config", str(SHIPPED)]) == 0
    assert "OK" in capsys.readouterr().out


def test_config_command_prints_effective_config_with_secrets_masked(tmp_path: Path, capsys) -> None:
    path = tmp_path / "robotcam.yaml"
    path.write_text(
        "server: {port: 9000}\n"
        "webrtc: {ice_servers: [{urls: 'turn:t.example.org', username: u, credential: hunter2}]}\n"
    )
    assert main(["config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    printed = yaml.safe_load(out)
    assert printed["server"]["port"] == 9000
    assert printed["webrtc"]["ice_servers"][0]["credential"] == "**********"
    assert printed["video"]["width"] == 640  # defaults filled in


def test_run_with_bad_config_exits_nonzero_with_one_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "robotcam.yaml"
    path.write_text("video: {fps: many}\n")
    result = subprocess.run(
        [sys.executable, "-m", "robotcam", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "video.fps: must be a number (got text 'many')" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "robotcam", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"robotcam {__version__}"
