#!/usr/bin/env bash
# Builds the peer environment for side-by-side benchmarks: Flower 1.42 with its
# Ray simulation, in its own virtual environment, because Flower pins
# protobuf<7 while fedforge needs protobuf>=7. Prints the interpreter path.
set -euo pipefail
here="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${FLOWER_VENV:-$here/.peers/flower}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import flwr, ray, torch" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip >&2
  "$venv/bin/pip" install -q torch==2.13.0 >&2
  "$venv/bin/pip" install -q "flwr[simulation]==1.42.0" numpy scikit-learn >&2
fi
echo "$venv/bin/python"
