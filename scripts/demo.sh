#!/usr/bin/env bash
# Installs the build tools if missing, then runs the demo (arguments are
# passed on). XNNCACHE_XNNPACK picks the XNNPACK, as for scripts/test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh

bash scripts/install-deps.sh
cargo run --release -p xnncache-bench --bin demo -- "$@"
