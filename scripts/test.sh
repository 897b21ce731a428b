#!/usr/bin/env bash
# Install everything (scripts/setup.sh) and run the whole test suite as root.
# Tests only work inside network namespaces they create; a session fixture
# fails the run if the root namespace changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
