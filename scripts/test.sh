#!/usr/bin/env bash
# Installs the build tools if missing, then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- --nocapture`).
# The debug profile is used: XNNPACK itself is always built in Release by
# cmake (once per machine, cached outside the work tree), and our own code
# compiles faster without optimisation. In CI (`CI` set) the header drift
# check runs as part of `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
echo "test.sh: the first build compiles XNNPACK from source (about 3 minutes on 2 cores); later builds reuse it"
cargo test --workspace "$@"
