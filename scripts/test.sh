#!/usr/bin/env bash
# Set up this checkout with the test dependencies and run the whole suite inside a network
# namespace that has only the loopback interface, so no test can send a packet elsewhere
# (see tests/README or shared loopback notes). Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/bootstrap.sh --test

if [ "$(id -u)" -eq 0 ] && unshare --net true 2>/dev/null; then
    ns=(unshare --net --)
elif unshare -rn true 2>/dev/null; then
    ns=(unshare -rn --)
else
    echo "test: cannot create a network namespace here; running on the host with every address pinned to 127.0.0.1" >&2
    ns=()
fi
mkdir -p test-artifacts
exec "${ns[@]}" sh -c '{ ip link set lo up 2>/dev/null || :; } && exec .venv/bin/python -m pytest "$@"' \
    pytest -q -p no:cacheprovider "$@"
