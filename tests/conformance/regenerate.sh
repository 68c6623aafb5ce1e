#!/bin/sh
# Regenerates the expected results of the conformance corpus with the real Supervisor.
#   PYTHON=/path/to/python-with-supervisor-4.3.0 tests/conformance/regenerate.sh
# Each main file X.conf gets X.expected.json (what supervisord reads from it), and each
# invalid/X.conf gets invalid/X.supervisor.txt (supervisord's message when it refuses it).
set -eu
cd "$(dirname "$0")"
PYTHON=${PYTHON:-/opt/supvenv/bin/python}
version=$("$PYTHON" -c 'import supervisor.options as o; print(o.VERSION)')
[ "$version" = "4.3.0" ] || { echo "need Supervisor 4.3.0, found $version" >&2; exit 1; }
for conf in *.conf seed/supervisord.conf includes/main.conf; do
    "$PYTHON" dump_supervisor.py "$conf" > "${conf%.conf}.expected.json"
done
for conf in invalid/*.conf; do
    "$PYTHON" dump_supervisor.py --error "$conf" > "${conf%.conf}.supervisor.txt"
done
