#!/usr/bin/env bash
# Set up everything robotcam needs in this checkout, on a fresh Debian / Raspberry Pi OS
# machine with only Python 3.11+: Debian packages (apt-get, via sudo when not root), a venv
# in .venv, and the project installed into it (editable). Idempotent and quick when done.
#   scripts/bootstrap.sh          what the daemon needs
#   scripts/bootstrap.sh --test   plus what the test suite needs (chromium, systemd-analyze, ...)
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: run as root or install sudo" >&2; exit 1; }
    SUDO=sudo
fi

python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "bootstrap: robotcam needs Python 3.11 or newer ($("$python" --version 2>&1))" >&2; exit 1; }

# --- Debian packages, only those missing ---------------------------------------------------
missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing+=("$1"); }
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    missing+=("python3-venv")
fi
need_pkg libportaudio2          # sounddevice (microphone / speaker)
if [ "$want_test" = 1 ]; then
    command -v chromium >/dev/null || missing+=("chromium")   # the browser tests
    command -v systemd-analyze >/dev/null || missing+=("systemd")  # unit verification
    command -v ip >/dev/null || missing+=("iproute2")           # loopback-only namespace
    command -v unshare >/dev/null || missing+=("util-linux")
    command -v npm >/dev/null || missing+=("nodejs" "npm")      # the WHEP player test
    command -v janus >/dev/null || missing+=("janus")           # the WHIP publishing tests (a real SFU)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- the virtual environment ---------------------------------------------------------------
# --system-site-packages: on Raspberry Pi OS, picamera2 comes from apt (python3-picamera2).
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv --system-site-packages .venv
fi
extras=""
[ "$want_test" = 1 ] && extras="[test]"
stamp=".venv/.robotcam-installed"
fingerprint="$(sha256sum pyproject.toml | cut -d' ' -f1)$extras"
if [ ! -f "$stamp" ] || ! grep -qxF -- "$fingerprint" "$stamp"; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".$extras"
    echo "$fingerprint" >> "$stamp"
fi

# --- the third-party WHEP player the browser tests load (npm; only its lock file is kept) -----
if [ "$want_test" = 1 ]; then
    player=tests/whep-player
    lock_sum="$(sha256sum "$player/package-lock.json" | cut -d' ' -f1)"
    if [ "$(cat "$player/node_modules/.robotcam-lock" 2>/dev/null)" != "$lock_sum" ]; then
        (cd "$player" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$lock_sum" > "$player/node_modules/.robotcam-lock"
    fi
fi
