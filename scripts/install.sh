#!/usr/bin/env bash
# Install or upgrade robotcam as a systemd service (Raspberry Pi OS / Debian).
#
#   sudo scripts/install.sh                  install, or upgrade and restart
#   scripts/install.sh --root DIR --no-venv  stage the file layout under DIR
#
# Idempotent: re-running upgrades the code and unit but never touches an
# existing /etc/robotcam.yaml; a re-run with the same inputs changes nothing.
#
# Environment:
#   ROBOTCAM_SRC  project source tree to install (default: this script's repo);
#                 the unit comes from $ROBOTCAM_SRC/systemd/robotcam.service and
#                 the default config from $ROBOTCAM_SRC/config/robotcam.yaml.
set -euo pipefail

readonly UNIT_NAME=robotcam.service
readonly SERVICE_USER=robotcam
readonly DEVICE_GROUPS=(video audio render)
readonly DEFAULT_PORT=8080

usage() {
    cat <<'EOF'
Usage: install.sh [--root DIR] [--no-venv] [--no-start]

  --root DIR   install into the staging root DIR instead of the host: every
               path is prefixed with DIR; apt, useradd and systemctl are
               skipped and nothing is chown'ed (a venv created there
               only works from that path: combine with --no-venv to stage)
  --no-venv    do not create /opt/robotcam/venv or pip-install the project
  --no-start   do not run systemctl (daemon-reload, enable, start/restart)
  -h, --help   show this help
EOF
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

info() {
    echo "==> $*"
}

ROOT=""
STAGING=0
NO_VENV=0
NO_START=0
while (($#)); do
    case "$1" in
        --root)
            (($# >= 2)) || die "--root needs a directory"
            ROOT="$2"
            STAGING=1
            shift 2
            ;;
        --root=*)
            ROOT="${1#--root=}"
            STAGING=1
            shift
            ;;
        --no-venv) NO_VENV=1; shift ;;
        --no-start) NO_START=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if ((STAGING)); then
    [[ -n "$ROOT" ]] || die "--root needs a non-empty directory"
    mkdir -p -- "$ROOT"
    ROOT="$(cd -- "$ROOT" && pwd)"
    [[ "$ROOT" != / ]] || ROOT=""
elif ((EUID != 0)); then
    die "must run as root (try: sudo $0), or use --root DIR for a staged install"
fi

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
SRC="${ROBOTCAM_SRC:-$SCRIPT_DIR/..}"
[[ -d "$SRC" ]] || die "source directory not found: $SRC"
SRC="$(cd -- "$SRC" && pwd)"
UNIT_SRC="$SRC/systemd/$UNIT_NAME"
CONFIG_SRC="$SRC/config/robotcam.yaml"
[[ -f "$UNIT_SRC" ]] || die "unit file not found: $UNIT_SRC"

PREFIX_DIR="$ROOT/opt/robotcam"
VENV="$PREFIX_DIR/venv"
CONFIG="$ROOT/etc/robotcam.yaml"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/$UNIT_NAME"

# Predictable modes for everything created below, whatever the caller's umask.
umask 022

# --- Debian packages --------------------------------------------------------
install_packages() {
    local pkgs=(python3-venv libportaudio2)
    # picamera2 comes from the Raspberry Pi archive (built against its
    # libcamera, hence apt rather than pip); other Debian hosts lack it.
    if apt-cache show python3-picamera2 >/dev/null 2>&1; then
        pkgs+=(python3-picamera2)
    fi
    local missing=() pkg
    for pkg in "${pkgs[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        info "installing Debian packages: ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
    else
        info "Debian packages already installed: ${pkgs[*]}"
    fi
}

# --- system user --------------------------------------------------------------
create_user() {
    local group
    for group in "${DEVICE_GROUPS[@]}"; do
        if ! getent group "$group" >/dev/null; then
            # The unit's SupplementaryGroups= names all three and systemd
            # refuses to start a unit naming a missing group. An empty system
            # group grants nothing.
            info "creating missing system group $group"
            groupadd --system "$group"
        fi
    done
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        info "creating system user $SERVICE_USER"
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/robotcam --shell /usr/sbin/nologin \
            --comment "robotcam camera streaming daemon" "$SERVICE_USER"
    fi
    # Membership matters for manual runs (sudo -u robotcam ...); the service
    # itself gets the groups from SupplementaryGroups=.
    local IFS=,
    usermod --append --groups "${DEVICE_GROUPS[*]}" "$SERVICE_USER"
}

# --- virtualenv and project ---------------------------------------------------
install_venv() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        info "creating virtualenv $VENV"
        # --system-site-packages: apt's python3-picamera2/python3-libcamera
        # are only importable from the system interpreter's site-packages.
        python3 -m venv --system-site-packages "$VENV"
    fi
    info "installing robotcam from $SRC"
    # pip always rebuilds and reinstalls a local project, so an upgrade with
    # an unchanged version number still deploys the new code; it also
    # byte-compiles, which matters because /opt is read-only to the service.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SRC"
    # `sudo robotcam gen-cert`, `sudo robotcam reset-password` from any shell
    if ((!STAGING)); then
        ln -sfn "$VENV/bin/robotcam" /usr/local/bin/robotcam
    fi
}

# install_file SRC DEST MODE [OWNER GROUP]: copy only when the content or mode
# differs, so a re-run leaves files (and their mtimes) alone. Prints "changed"
# when it wrote something.
install_file() {
    local src="$1" dest="$2" mode="$3" owner="${4:-}" group="${5:-}"
    local cur_mode=""
    [[ -e "$dest" ]] && cur_mode="$(stat -c %a "$dest")"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest" && [[ "$cur_mode" == "${mode#0}" ]]; then
        return 0
    fi
    if [[ -n "$owner" ]]; then
        install -m "$mode" -o "$owner" -g "$group" "$src" "$dest"
    else
        install -m "$mode" "$src" "$dest"
    fi
    echo changed
}

# make_dir DIR: create a missing directory (root-owned, 0755); existing
# system directories such as /etc are left exactly as they are.
make_dir() {
    [[ -d "$1" ]] && return 0
    if ((STAGING)); then
        install -d -m 0755 "$1"
    else
        install -d -m 0755 -o root -g root "$1"
    fi
}

# --- config -------------------------------------------------------------------
install_config() {
    if [[ -e "$CONFIG" ]]; then
        info "keeping existing $CONFIG"
        return 0
    fi
    [[ -f "$CONFIG_SRC" ]] || die "default config not found: $CONFIG_SRC"
    make_dir "$(dirname -- "$CONFIG")"
    info "writing default config $CONFIG"
    # 0640 root:robotcam: the daemon can read it; it may hold TURN secrets.
    if ((STAGING)); then
        install -m 0640 "$CONFIG_SRC" "$CONFIG"
    else
        install -m 0640 -o root -g "$SERVICE_USER" "$CONFIG_SRC" "$CONFIG"
    fi
}

# --- unit -----------------------------------------------------------------------
install_unit() {
    make_dir "$ROOT/etc"
    make_dir "$ROOT/etc/systemd"
    make_dir "$UNIT_DIR"
    local out
    if ((STAGING)); then
        out="$(install_file "$UNIT_SRC" "$UNIT" 0644)"
    else
        out="$(install_file "$UNIT_SRC" "$UNIT" 0644 root root)"
    fi
    if [[ -n "$out" ]]; then
        info "installed $UNIT"
    else
        info "unit $UNIT unchanged"
    fi
}

# --- systemd ------------------------------------------------------------------
start_service() {
    if [[ ! -d /run/systemd/system ]]; then
        info "systemd is not running here; skipping systemctl"
        return 0
    fi
    systemctl daemon-reload
    systemctl enable "$UNIT_NAME"
    if systemctl is-active --quiet "$UNIT_NAME"; then
        info "restarting $UNIT_NAME (upgrade)"
        systemctl restart "$UNIT_NAME"
    else
        info "starting $UNIT_NAME"
        # reset-failed: a previous crash loop may have hit StartLimitBurst.
        systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
        systemctl start "$UNIT_NAME"
    fi
}

# --- URLs -----------------------------------------------------------------------
# server.port from the YAML config, without needing a YAML parser: handles
# the block form ("server:\n  port: 8080") and the flow form
# ("server: {port: 8080}"); anything else falls back to the default.
config_port() {
    local port=""
    if [[ -r "$CONFIG" ]]; then
        port="$(awk '
            /^[^[:space:]#]/ {
                in_server = ($0 ~ /^server:[[:space:]]*(#.*)?$/)
                if ($0 ~ /^server:[[:space:]]*\{/ && match($0, /port:[[:space:]]*[0-9]+/)) {
                    v = substr($0, RSTART, RLENGTH); sub(/port:[[:space:]]*/, "", v); print v; exit
                }
                next
            }
            in_server && /^[[:space:]]+port:[[:space:]]*[0-9]+[[:space:]]*(#.*)?$/ {
                v = $0; sub(/^[[:space:]]+port:[[:space:]]*/, "", v); sub(/[^0-9].*$/, "", v); print v; exit
            }
        ' "$CONFIG")"
    fi
    echo "${port:-$DEFAULT_PORT}"
}

# --- first sign-in ---------------------------------------------------------------
# At its first start (no users in the config) the daemon makes user admin and
# logs the password once: show it here, where the person installing looks.
print_first_sign_in() {
    [[ -d /run/systemd/system ]] && command -v journalctl >/dev/null || return 0
    local log="" i
    for ((i = 0; i < 40; i++)); do
        log="$(journalctl -u "$UNIT_NAME" -o cat --no-pager --since "$STARTED_AT" 2>/dev/null || true)"
        grep -qE 'initial admin password: |auth: on|auth.enabled is false' <<<"$log" && break
        sleep 0.5
    done
    local password
    password="$(grep -m1 -o 'initial admin password: .*' <<<"$log" | sed 's/^initial admin password: //')"
    echo
    if [[ -n "$password" ]]; then
        echo "Sign in as user admin with password: $password"
        echo "  (shown once; 'sudo robotcam reset-password' makes a new one; add users: README, Security)"
    elif grep -q 'auth.enabled is false' <<<"$log"; then
        echo "Access control is OFF (auth.enabled: false): anyone on the network can watch and drive."
    else
        echo "Sign in with the accounts in $CONFIG, or as admin with the password shown at the first"
        echo "install ('sudo robotcam reset-password' makes a new one)."
    fi
}

print_urls() {
    local port host addr
    port="$(config_port)"
    host="$(hostname 2>/dev/null || echo localhost)"
    echo
    echo "robotcam viewer URLs:"
    echo "  http://$host.local:$port/"
    for addr in $(hostname -I 2>/dev/null || true); do
        case "$addr" in
            127.* | *:*) ;;  # loopback, IPv6
            *) echo "  http://$addr:$port/" ;;
        esac
    done
}

# --- main -----------------------------------------------------------------------
if ((!STAGING)); then
    install_packages
    create_user
fi

make_dir "$ROOT/opt"
# /opt/robotcam is always root-owned 0755: the service user must not be able
# to modify its own code.
if ((STAGING)); then
    install -d -m 0755 "$PREFIX_DIR"
else
    install -d -m 0755 -o root -g root "$PREFIX_DIR"
fi
if ((NO_VENV)); then
    info "--no-venv: skipping virtualenv and pip install"
else
    install_venv
fi

install_config
install_unit

if ((STAGING)); then
    info "staged install in $ROOT: not touching systemd"
elif ((NO_START)); then
    info "--no-start: not touching systemd (run: systemctl daemon-reload && systemctl enable --now $UNIT_NAME)"
else
    STARTED_AT="$(date '+%Y-%m-%d %H:%M:%S')"
    start_service
fi

print_urls
if ((!STAGING && !NO_START)); then
    print_first_sign_in
fi
