"""The shipped unit: valid for systemd, sandboxed to exposure <= 2.0, and
still granting what the camera, audio and network stacks need."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "robotcam.service"
EXEC_START_BINARY = "/opt/robotcam/venv/bin/robotcam"
MAX_EXPOSURE = 2.0
TIMEOUT = 120  # systemd-analyze takes well under a second; be generous


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values in order (systemd keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section is not None, f"assignment outside a section: {raw!r}"
        assert not line.endswith("\\"), "keep the unit free of continuation lines"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        sections[section][key.strip()].append(value.strip())
    return sections


def words(values: list[str]) -> list[str]:
    """All space-separated items of a list-valued key, reset by empty assignments."""
    items: list[str] = []
    for value in values:
        if not value:
            items = []
        items.extend(value.split())
    return items


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    return tool


@pytest.fixture
def verifiable_unit(tmp_path: Path) -> Path:
    # `systemd-analyze verify` fails when ExecStart= names a binary that does
    # not exist, and /opt/robotcam/venv only exists after install.sh. Verify a
    # copy whose ExecStart= points at an existing executable instead; every
    # other line is checked unchanged.
    text = UNIT.read_text()
    assert EXEC_START_BINARY in text
    copy = tmp_path / "robotcam.service"  # same name: verify checks name/type
    copy.write_text(text.replace(EXEC_START_BINARY, "/bin/true"))
    return copy


def test_systemd_analyze_verify(verifiable_unit: Path) -> None:
    result = subprocess.run(
        [analyze(), "verify", str(verifiable_unit)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys or bad values are only warnings (exit status 0): fail on
    # any diagnostic that mentions our unit.
    complaints = [line for line in output.splitlines() if "robotcam.service" in line]
    assert not complaints, "\n".join(complaints)


def test_security_exposure_at_most_2() -> None:
    result = subprocess.run(
        [analyze(), "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0 and "offline" in output and "unrecognized" in output:
        pytest.skip("systemd-analyze too old for --offline (needs systemd >= 250)")
    match = re.search(r"Overall exposure level for robotcam\.service:\s*(\d+(?:\.\d+)?)", output)
    assert match, f"could not find the overall exposure in:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"
    complaints = [line for line in result.stderr.splitlines() if "robotcam.service" in line]
    assert not complaints, "\n".join(complaints)


def test_service_lifecycle_settings() -> None:
    unit = parse_unit(UNIT)
    svc, u = unit["Service"], unit["Unit"]
    assert svc["Type"] == ["notify"]
    assert svc["NotifyAccess"] == ["main"]
    assert svc["ExecStart"] == [f"{EXEC_START_BINARY} run --config /etc/robotcam.yaml"]
    assert svc["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert svc["Restart"] == ["on-failure"]
    assert re.fullmatch(r"\d+s?", svc["WatchdogSec"][0])
    assert re.fullmatch(r"\d+s?", svc["TimeoutStopSec"][0])
    assert 5 < int(svc["TimeoutStopSec"][0].rstrip("s")) <= 30, "daemon exits within 5 s of SIGTERM"
    # Start limits live in [Unit] since systemd 230; in [Service] they are ignored.
    assert u["StartLimitIntervalSec"] and u["StartLimitBurst"]
    assert "StartLimitIntervalSec" not in svc and "StartLimitBurst" not in svc
    assert set(words(u["After"])) >= {"network-online.target", "sound.target"}
    assert "network-online.target" in words(u["Wants"])
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_identity_and_writable_directories() -> None:
    svc = parse_unit(UNIT)["Service"]
    assert svc["User"] == ["robotcam"]
    assert svc["Group"] == ["robotcam"]
    assert set(words(svc["SupplementaryGroups"])) == {"video", "audio", "render"}
    assert "DynamicUser" not in svc
    assert svc["StateDirectory"] == ["robotcam"]
    assert svc["RuntimeDirectory"] == ["robotcam"]
    assert svc["UMask"] == ["0077"]


def test_device_allow_list_covers_camera_and_audio() -> None:
    svc = parse_unit(UNIT)["Service"]
    assert svc["DevicePolicy"] == ["closed"]
    allowed = {tuple(v.split()) for v in svc["DeviceAllow"]}
    for device in ("char-video4linux", "char-media", "char-dma_heap", "char-alsa", "char-drm", "/dev/vchiq"):
        assert (device, "rw") in allowed, device


def test_directives_that_would_break_devices_stay_off() -> None:
    svc = parse_unit(UNIT)["Service"]
    # Each of these is explained in a comment in the unit.
    assert svc.get("PrivateDevices", ["no"]) == ["no"], "hides /dev/video*, /dev/snd"
    assert svc.get("PrivateUsers", ["no"]) == ["no"], "unmaps the device groups"
    assert svc.get("MemoryDenyWriteExecute", ["no"]) == ["no"], "breaks cffi callbacks (sounddevice)"
    assert svc.get("ProcSubset", ["all"]) == ["all"], "hides /proc/asound, /proc/cpuinfo"
    assert "IPAddressDeny" not in svc, "viewers and STUN/TURN can be anywhere"
    assert "PrivateNetwork" not in svc


def test_hardening_directives() -> None:
    svc = parse_unit(UNIT)["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallArchitectures": "native",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "LockPersonality": "yes",
        "RestrictSUIDSGID": "yes",
        "RemoveIPC": "yes",
    }
    for key, value in expected.items():
        assert svc.get(key) == [value], key
    assert set(words(svc["RestrictAddressFamilies"])) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert svc["SystemCallFilter"][0] == "@system-service"
    denied = {w.lstrip("~") for v in svc["SystemCallFilter"][1:] if v.startswith("~") for w in v.split()}
    assert denied >= {"@privileged", "@resources"}


def test_risky_directives_are_explained_in_comments() -> None:
    comments = "\n".join(
        line for line in UNIT.read_text().splitlines() if line.lstrip().startswith("#")
    )
    for directive in ("PrivateDevices=", "PrivateUsers=", "MemoryDenyWriteExecute=", "ProcSubset=",
                      "RestrictRealtime", "IPAddressDeny=", "/dev/vchiq", "dma_heap"):
        assert directive in comments, f"no comment explains {directive}"
