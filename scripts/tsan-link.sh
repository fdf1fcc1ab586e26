#!/usr/bin/env bash
# Linker for scripts/sanitizers.sh's ThreadSanitizer build: executables get
# the TSan runtime (XNNCACHE_TSAN_RT, first, so that libc resolves it), shared
# objects (the cdylib) do not.
for arg in "$@"; do
    [[ $arg == -shared ]] && exec cc "$@"
done
exec cc -Wl,--whole-archive "$XNNCACHE_TSAN_RT" -Wl,--no-whole-archive "$@" -lstdc++ -lpthread -ldl -lc
