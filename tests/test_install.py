"""scripts/install.sh and scripts/uninstall.sh in --root (staging) mode.

The scripts run from a throw-away copy of the repo layout (scripts/, systemd/,
config/) so that the default source resolution ("the repo the script lives
in") is exercised without depending on the real config/robotcam.yaml. Host
commands that must never run in --root mode (apt, useradd, systemctl, ...) are
shadowed by stubs that record any call.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "scripts" / "install.sh"
UNINSTALL = REPO / "scripts" / "uninstall.sh"
UNIT = REPO / "systemd" / "robotcam.service"
TIMEOUT = 120

CONFIG = """\
# test config
server:
  host: 0.0.0.0
  port: 8123   # viewers
logging:
  level: info
"""

HOST_COMMANDS = ("apt-get", "apt-cache", "dpkg-query", "useradd", "usermod", "userdel",
                 "groupadd", "groupdel", "systemctl", "chown", "pip", "pip3")

Snapshot = dict[str, tuple[str, int, bytes | None]]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    src = tmp_path / "repo"
    (src / "scripts").mkdir(parents=True)
    (src / "systemd").mkdir()
    (src / "config").mkdir()
    for script in (INSTALL, UNINSTALL):
        shutil.copy2(script, src / "scripts" / script.name)
    shutil.copy2(UNIT, src / "systemd" / UNIT.name)
    (src / "config" / "robotcam.yaml").write_text(CONFIG)
    return src


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    """A bin dir of recording stubs; the log stays empty if none was called."""
    bin_dir = tmp_path / "stubs"
    bin_dir.mkdir()
    log = tmp_path / "host-commands.log"
    log.write_text("")
    for name in HOST_COMMANDS:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        stub.chmod(0o755)
    return bin_dir


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "staging root"  # a space, to catch quoting bugs


def run(script: Path, *args: str, stubs: Path, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ROBOTCAM_SRC"}
    full_env["PATH"] = f"{stubs}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    full_env.update(env or {})
    result = subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=full_env, timeout=TIMEOUT,
    )
    if check:
        assert result.returncode == 0, f"{script.name} {args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def host_calls(stubs: Path) -> str:
    return (stubs.parent / "host-commands.log").read_text()


def snapshot(root: Path) -> Snapshot:
    """Every path under root with its type, permission bits and content."""
    snap: Snapshot = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISDIR(st.st_mode):
            snap[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
        elif stat.S_ISLNK(st.st_mode):
            snap[rel] = ("link", 0, os.readlink(path).encode())
        else:
            snap[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return snap


def install(repo: Path, root: Path, stubs: Path, *extra: str, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(repo / "scripts" / "install.sh", "--root", str(root), "--no-start", "--no-venv", *extra,
               stubs=stubs, env=env, check=check)


def uninstall(repo: Path, root: Path, stubs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(repo / "scripts" / "uninstall.sh", "--root", str(root), *extra, stubs=stubs)


def test_scripts_are_executable_strict_bash() -> None:
    for script in (INSTALL, UNINSTALL):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
        assert "set -euo pipefail" in text
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=TIMEOUT)


def test_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    result = subprocess.run([shellcheck, str(INSTALL), str(UNINSTALL)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_lays_out_files(repo: Path, root: Path, stubs: Path) -> None:
    result = install(repo, root, stubs)
    assert host_calls(stubs) == "", "--root must not touch the host"

    snap = snapshot(root)
    assert snap == {
        "etc": ("dir", 0o755, None),
        "etc/robotcam.yaml": ("file", 0o640, CONFIG.encode()),
        "etc/systemd": ("dir", 0o755, None),
        "etc/systemd/system": ("dir", 0o755, None),
        "etc/systemd/system/robotcam.service": ("file", 0o644, UNIT.read_bytes()),
        "opt": ("dir", 0o755, None),
        "opt/robotcam": ("dir", 0o755, None),
    }
    # Port comes from the config's server.port.
    hostname = subprocess.run(["hostname"], capture_output=True, text=True).stdout.strip()
    assert f"http://{hostname}.local:8123/" in result.stdout
    for line in result.stdout.splitlines():
        if line.strip().startswith("http://"):
            assert line.strip().endswith(":8123/")
            assert "127." not in line


def test_install_respects_restrictive_umask(repo: Path, root: Path, stubs: Path) -> None:
    full = f"umask 077; exec bash {repo / 'scripts' / 'install.sh'} --root '{root}' --no-start --no-venv"
    env = {k: v for k, v in os.environ.items() if k != "ROBOTCAM_SRC"}
    env["PATH"] = f"{stubs}:{os.environ['PATH']}"
    subprocess.run(["bash", "-c", full], check=True, capture_output=True, env=env, timeout=TIMEOUT)
    snap = snapshot(root)
    assert snap["opt/robotcam"][1] == 0o755
    assert snap["etc/systemd/system/robotcam.service"][1] == 0o644
    assert snap["etc/robotcam.yaml"][1] == 0o640


def test_second_run_changes_nothing(repo: Path, root: Path, stubs: Path) -> None:
    install(repo, root, stubs)
    first = snapshot(root)
    result = install(repo, root, stubs)
    assert snapshot(root) == first
    assert "unchanged" in result.stdout
    assert host_calls(stubs) == ""


def test_edited_config_survives_reinstall(repo: Path, root: Path, stubs: Path) -> None:
    install(repo, root, stubs)
    config = root / "etc" / "robotcam.yaml"
    edited = CONFIG.replace("8123", "9000") + "# my edit\n"
    config.write_text(edited)
    config.chmod(0o600)
    # A newer default config ships with the upgrade: it must not replace the edit.
    (repo / "config" / "robotcam.yaml").write_text(CONFIG + "new_option: true\n")
    result = install(repo, root, stubs)
    assert config.read_text() == edited
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert ":9000/" in result.stdout, "URLs use the port of the installed config"


def test_upgrade_replaces_the_unit(repo: Path, root: Path, stubs: Path) -> None:
    install(repo, root, stubs)
    unit = repo / "systemd" / "robotcam.service"
    unit.write_text(unit.read_text() + "# upgraded\n")
    install(repo, root, stubs)
    installed = root / "etc" / "systemd" / "system" / "robotcam.service"
    assert installed.read_text().endswith("# upgraded\n")
    assert stat.S_IMODE(installed.stat().st_mode) == 0o644


def test_robotcam_src_overrides_the_source_tree(repo: Path, root: Path, stubs: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-src"
    (other / "systemd").mkdir(parents=True)
    (other / "config").mkdir()
    shutil.copy2(UNIT, other / "systemd" / "robotcam.service")
    (other / "config" / "robotcam.yaml").write_text("logging:\n  level: debug\n")
    # The real scripts, pointed at another tree.
    result = run(INSTALL, "--root", str(root), "--no-start", "--no-venv",
                 stubs=stubs, env={"ROBOTCAM_SRC": str(other)})
    assert (root / "etc" / "robotcam.yaml").read_text() == "logging:\n  level: debug\n"
    assert ":8080/" in result.stdout, "no server.port in the config: default port"


@pytest.mark.parametrize(
    ("config", "port"),
    [
        ("server: {host: 0.0.0.0, port: 8443}\n", "8443"),
        ("server:\n  # port: 1\n  host: 0.0.0.0\n  port: 8081\nother:\n  port: 2\n", "8081"),
        ("other:\n  port: 2\nserver:\n  host: 0.0.0.0\n", "8080"),
        ("", "8080"),
    ],
)
def test_port_is_read_from_server_section(repo: Path, root: Path, stubs: Path, config: str, port: str) -> None:
    (repo / "config" / "robotcam.yaml").write_text(config)
    result = install(repo, root, stubs)
    urls = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("http://")]
    assert urls and all(url.endswith(f":{port}/") for url in urls), result.stdout


def test_missing_default_config_fails_clearly(repo: Path, root: Path, stubs: Path) -> None:
    (repo / "config" / "robotcam.yaml").unlink()
    result = install(repo, root, stubs, check=False)
    assert result.returncode != 0
    assert "config/robotcam.yaml" in result.stderr


def test_unknown_option_fails(repo: Path, root: Path, stubs: Path) -> None:
    result = install(repo, root, stubs, "--bogus", check=False)
    assert result.returncode != 0
    assert "--bogus" in result.stderr


def test_uninstall_keeps_config_and_purge_removes_it(repo: Path, root: Path, stubs: Path) -> None:
    install(repo, root, stubs)
    state = root / "var" / "lib" / "robotcam"
    state.mkdir(parents=True)
    (state / "identity").write_text("state")
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir()
    (wants / "robotcam.service").symlink_to("/etc/systemd/system/robotcam.service")

    uninstall(repo, root, stubs)
    assert host_calls(stubs) == ""
    assert not (root / "etc" / "systemd" / "system" / "robotcam.service").exists()
    assert not (wants / "robotcam.service").is_symlink()
    assert not (root / "opt" / "robotcam").exists()
    assert (root / "etc" / "robotcam.yaml").read_text() == CONFIG
    assert (state / "identity").exists(), "state is only removed with --purge"

    # Idempotent: a second uninstall is fine.
    uninstall(repo, root, stubs)

    uninstall(repo, root, stubs, "--purge")
    assert not (root / "etc" / "robotcam.yaml").exists()
    assert not state.exists()
    assert host_calls(stubs) == ""


def test_reinstall_after_uninstall_restores_layout(repo: Path, root: Path, stubs: Path) -> None:
    install(repo, root, stubs)
    first = snapshot(root)
    uninstall(repo, root, stubs, "--purge")
    install(repo, root, stubs)
    assert snapshot(root) == first
