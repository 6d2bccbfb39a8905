#!/usr/bin/env bash
# Set up this checkout (scripts/bootstrap.sh) and run the daemon in the foreground.
# Uses /etc/robotcam.yaml when it exists, else built-in defaults (the test pattern when the
# machine has no camera). Extra arguments go to `robotcam run`, e.g. --config my.yaml.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/bootstrap.sh"
# the first-run admin's password hash and the sign-in sessions (README, Security)
export STATE_DIRECTORY="${STATE_DIRECTORY:-$here/.state}"
exec "$here/.venv/bin/robotcam" run "$@"
