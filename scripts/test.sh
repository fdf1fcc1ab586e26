#!/usr/bin/env bash
# Installs the build tools if missing, then runs every test of the workspace.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -- --nocapture`).
# XNNCACHE_XNNPACK picks the XNNPACK the tests run on: 4ea82e5 (default,
# Debian's, ABI v1) or 92a7ad5 (ExecuTorch's, ABI v3; its source tarballs
# must be in XNNCACHE_DEPS_DIR). The debug profile is used: XNNPACK itself is
# always built in Release by cmake (once per machine and pin, cached outside
# the work tree), and our own code compiles faster without optimisation. In
# CI (`CI` set) the header drift check runs as part of `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh

bash scripts/install-deps.sh
echo "test.sh: XNNPACK ${XNNCACHE_XNNPACK:-4ea82e5}; the first build of a pin compiles XNNPACK from source (2 to 4 minutes on 2 cores); later builds reuse it"
cargo test --workspace "$@"
