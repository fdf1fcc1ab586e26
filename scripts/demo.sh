#!/usr/bin/env bash
# Installs the build tools if missing, then runs the demo (arguments are passed on).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
cargo run --release -p xnncache-bench --bin demo -- "$@"
