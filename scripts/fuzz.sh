#!/usr/bin/env bash
# Run only the fuzz targets (tests/test_fuzz.py), through scripts/test.sh (same namespace and
# venv). --long tries ten times as many examples, random ones (not the suite's fixed set), and
# keeps any failure Hypothesis finds in .hypothesis/ so the next run tries it first.
# Extra arguments go to pytest: scripts/fuzz.sh --long -k whep
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--long" ]; then
    shift
    export ROBOTCAM_FUZZ=long
fi
exec "$here/scripts/test.sh" tests/test_fuzz.py --hypothesis-show-statistics "$@"
