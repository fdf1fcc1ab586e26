# Sourced by the scripts: one build folder per pinned XNNPACK, so that
# switching XNNCACHE_XNNPACK does not rebuild the other pin's binaries.
# The default pin (4ea82e5) keeps cargo's usual target/.
if [[ -n "${XNNCACHE_XNNPACK:-}" && "${XNNCACHE_XNNPACK}" != 4ea82e5* && -z "${CARGO_TARGET_DIR:-}" ]]; then
    export CARGO_TARGET_DIR="$(pwd)/target/xnnpack-${XNNCACHE_XNNPACK}"
fi
# Source tarballs: a shared/deps folder beside the repository (as CI has it)
# unless XNNCACHE_DEPS_DIR says otherwise.
if [[ -z "${XNNCACHE_DEPS_DIR:-}" && -d "$(dirname "$(pwd)")/shared/deps" ]]; then
    export XNNCACHE_DEPS_DIR="$(dirname "$(pwd)")/shared/deps"
fi
