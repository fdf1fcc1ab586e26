#!/usr/bin/env bash
# Every platform check in one command, for CI: cargo check + clippy of the
# core crate for the 11 shipping targets, then its unit tests on i686
# (natively), aarch64 (qemu-user) and x86_64 Windows (Wine).
# Installs what is missing from Debian (scripts/install-platform-deps.sh).
# Measured on the 2-core development machine: check-targets 11 min 22 s and
# the three test runs 65 + 48 + 50 s from nothing (the standard library is
# built from source once per target); 16 s + a few seconds once
# target/check-targets and target/cross exist.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-platform-deps.sh
bash scripts/check-targets.sh
for kind in i686 aarch64 windows; do
    bash scripts/test-cross.sh "$kind"
done
