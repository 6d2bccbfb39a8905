#!/usr/bin/env bash
# Remove robotcam installed by scripts/install.sh.
#
#   sudo scripts/uninstall.sh           stop, disable and remove the service and
#                                       /opt/robotcam; keep /etc/robotcam.yaml,
#                                       /var/lib/robotcam and the robotcam user
#   sudo scripts/uninstall.sh --purge   also remove the config, the state
#                                       directory, local unit drop-ins and the user
set -euo pipefail

readonly UNIT_NAME=robotcam.service
readonly SERVICE_USER=robotcam

usage() {
    cat <<'EOF'
Usage: uninstall.sh [--root DIR] [--no-stop] [--purge]

  --root DIR   remove from the staging root DIR instead of the host (every
               path prefixed with DIR; systemctl and userdel are skipped)
  --no-stop    do not run systemctl (stop, disable, daemon-reload)
  --purge      also remove /etc/robotcam.yaml, /var/lib/robotcam, drop-ins in
               /etc/systemd/system/robotcam.service.d and the robotcam user
  -h, --help   show this help
EOF
}

die() {
    echo "uninstall.sh: $*" >&2
    exit 1
}

info() {
    echo "==> $*"
}

ROOT=""
STAGING=0
NO_STOP=0
PURGE=0
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
        --no-stop) NO_STOP=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

if ((STAGING)); then
    [[ -n "$ROOT" ]] || die "--root needs a non-empty directory"
    [[ -d "$ROOT" ]] || die "staging root not found: $ROOT"
    ROOT="$(cd -- "$ROOT" && pwd)"
    [[ "$ROOT" != / ]] || ROOT=""
elif ((EUID != 0)); then
    die "must run as root (try: sudo $0), or use --root DIR"
fi

UNIT="$ROOT/etc/systemd/system/$UNIT_NAME"
DROPIN_DIR="$ROOT/etc/systemd/system/$UNIT_NAME.d"
WANTS_LINK="$ROOT/etc/systemd/system/multi-user.target.wants/$UNIT_NAME"

use_systemctl=0
if ((!STAGING && !NO_STOP)) && [[ -d /run/systemd/system ]]; then
    use_systemctl=1
fi

if ((use_systemctl)); then
    info "stopping and disabling $UNIT_NAME"
    systemctl disable --now "$UNIT_NAME" 2>/dev/null || true
fi

# `systemctl disable` removes this link; clean it up by hand when systemctl was
# skipped so no dangling enablement is left behind.
if [[ -L "$WANTS_LINK" ]]; then
    rm -f -- "$WANTS_LINK"
fi
if [[ -e "$UNIT" ]]; then
    info "removing $UNIT"
    rm -f -- "$UNIT"
fi

info "removing $ROOT/opt/robotcam"
rm -rf -- "$ROOT/opt/robotcam"
if [[ "$(readlink "$ROOT/usr/local/bin/robotcam" 2>/dev/null)" == /opt/robotcam/* ]]; then
    rm -f -- "$ROOT/usr/local/bin/robotcam"
fi

if ((PURGE)); then
    info "purging $ROOT/etc/robotcam.yaml and $ROOT/var/lib/robotcam"
    rm -f -- "$ROOT/etc/robotcam.yaml"
    rm -rf -- "$ROOT/var/lib/robotcam" "$DROPIN_DIR"
    if ((!STAGING)) && getent passwd "$SERVICE_USER" >/dev/null; then
        info "removing user $SERVICE_USER"
        userdel "$SERVICE_USER"
        # userdel drops the user's private group with USERGROUPS_ENAB; make
        # sure it is gone on systems configured otherwise.
        if getent group "$SERVICE_USER" >/dev/null; then
            groupdel "$SERVICE_USER" || true
        fi
    fi
elif [[ -e "$ROOT/etc/robotcam.yaml" ]]; then
    info "kept $ROOT/etc/robotcam.yaml (use --purge to remove)"
fi

if ((use_systemctl)); then
    systemctl daemon-reload
    systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
fi

info "robotcam removed"
