#!/usr/bin/env bash
# The C and C++ test programs and the Rust tests under valgrind memcheck and
# under AddressSanitizer + UndefinedBehaviorSanitizer (issue 12).
#
#   scripts/sanitizers.sh [valgrind|asan|tsan|all]     (default: all)
#
# valgrind: the debug test binaries as `cargo test` builds them; each run
#   in a child (the C program, the C++ program, cold and warm launches of
#   every model, the eight-thread series) under memcheck with
#   --error-exitcode, so any invalid read or write, use of uninitialised
#   memory or definite leak of ours fails the run. (Under valgrind the CPU
#   looks different, so XNNPACK picks other kernels and the cache file of a
#   native run is rebuilt: that path is exercised too.)
# asan: the tests crate rebuilt with nightly's -Zsanitizer=address (Rust,
#   target/asan) and the C/C++ programs with -fsanitize=address,undefined;
#   the whole test suite of the battery and of c_api runs under it (XNNPACK is
#   built for it with the same flags, once, in the build cache). UBSan's vptr
#   check is off: the sanitizer runtime Rust links has no C++ UBSan part.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/pin-env.sh
mode=${1:-all}
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
failures=0

if [[ $mode == valgrind || $mode == all ]]; then
    command -v valgrind >/dev/null || { apt-get install -y -q valgrind >/dev/null; }
    cargo test -p xnncache-tests --no-run --test c_api --test kills --test races 2>/dev/null
    bin() { ls -t "$target_dir"/debug/deps/"$1"-* | grep -v '\.d$' | head -1; }
    tmp=$(mktemp -d)
    vg=(nice -n 10 valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
        --suppressions=/dev/null --track-origins=no --trace-children=no)
    run() {
        local what=$1; shift
        if env "$@" >"$tmp/out" 2>"$tmp/err"; then
            echo "sanitizers: valgrind: $what: clean"
        else
            echo "sanitizers: valgrind: $what: FAILED ($?)"; tail -40 "$tmp/err"; failures=$((failures + 1))
        fi
    }
    c_api=$(bin c_api) kills=$(bin kills) races=$(bin races)
    run "C program" XNNCACHE_TEST_FILE="$tmp/c.bin" XNNCACHE_PATH="$tmp/c-dropin.bin" \
        "${vg[@]}" "$c_api" --exact child_c_program --include-ignored --test-threads=1
    run "C++ program" XNNCACHE_TEST_FILE="$tmp/cpp.bin" XNNCACHE_PATH="$tmp/cpp-dropin.bin" \
        "${vg[@]}" "$c_api" --exact child_cpp_program --include-ignored --test-threads=1
    for flags in "" "" "verify" "bycontent,compact" "sync"; do
        run "launch of every model [${flags}]" T_PATH="$tmp/launch.xnncache" T_FLAGS="$flags" \
            T_MODELS=fc_f32,qc8,qc4,qs8,conv,deconv,depthwise,mixed,shared_a,shared_b \
            "${vg[@]}" "$kills" --exact child_launch --include-ignored --test-threads=1
    done
    run "eight threads, one lifetime" XNNCACHE_BATTERY_THREAD_ROUNDS=1 \
        "${vg[@]}" "$races" --exact eight_threads_over_one_file_through_several_lifetimes --test-threads=1
    rm -rf "$tmp"
fi

if [[ $mode == asan || $mode == all ]]; then
    toolchain=()
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi
    host=$(rustc -vV | sed -n 's/^host: //p')
    # Only the tests crate's own code and xnncache are instrumented; build
    # scripts and proc macros are not (cargo applies RUSTFLAGS to them too
    # without --target, so --target is given).
    # The tests' own deliberate leaks (a build identifier leaked for the life
    # of a child launch) are not ours to report.
    lsan=$(mktemp)
    printf 'leak:persistence::child_launch\n' >"$lsan"
    if LSAN_OPTIONS="suppressions=$lsan" RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
        CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer" CXXFLAGS="-fsanitize=address,undefined -fno-sanitize=vptr -fno-omit-frame-pointer" \
        ASAN_OPTIONS="detect_leaks=1:detect_odr_violation=0" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
        CARGO_TARGET_DIR="$target_dir/asan" \
        nice -n 10 cargo "${toolchain[@]}" test --no-fail-fast --target "$host" -p xnncache-tests \
            --test c_api --test corruption --test kills --test races --test fuzz_corpus --test bigfiles --test persistence --test threads --test hostile --test dropin --test ioerrors --test background --test aliases \
            -- --test-threads=1 2>&1 | tail -60; then
        echo "sanitizers: asan+ubsan: clean"
    else
        echo "sanitizers: asan+ubsan: FAILED"; failures=$((failures + 1))
    fi
fi

if [[ $mode == tsan || $mode == all ]]; then
    # ThreadSanitizer needs an instrumented standard library (-Zbuild-std):
    # rustup's toolchain here has no rust-src, so Debian's rustc-web builds
    # everything (its rust-web-src), and the TSan runtime it lacks is taken
    # from rustup's toolchain (-Zexternal-clangrt; scripts/tsan-link.sh links
    # it into executables only). XNNPACK and the C test programs are not
    # instrumented: what TSan sees is xnncache, the tests and std.
    bash scripts/install-platform-deps.sh toolchain
    rt=$(ls "$(rustc --print sysroot)"/lib/rustlib/x86_64-unknown-linux-gnu/lib/librustc-*_rt.tsan.a | head -1)
    tsan_tests=(--test threads --test races --test background --test interleaving --test locking --test handles --test aliases --test c_api --test lifetimes)
    # Not under TSan: its runtime cannot follow a fork() of a threaded process
    # (the child stops on TSan's own "CHECK failed: sanitizer_thread_registry"),
    # and exit() from a signal handler is the deliberate misuse that test is
    # about (TSan rightly reports "signal-unsafe call inside of a signal").
    tsan_skip=(--skip a_forked_child_uses_its_parents_cache_in_memory_and_returns_promptly --skip forks_while_threads_use_the_caches --skip exit_from_a_signal_handler_while_a_cache_lock_is_held)
    tsan() {
        env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
            XNNCACHE_TSAN_RT="$rt" RUSTFLAGS="-Zsanitizer=thread -Zexternal-clangrt -Clinker=$(pwd)/scripts/tsan-link.sh" \
            CARGO_TARGET_DIR="$target_dir/tsan" TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 ${TSAN_EXTRA:-}" \
            nice -n 10 /usr/bin/cargo test -Zbuild-std --target x86_64-unknown-linux-gnu -p xnncache-tests "$@"
    }
    # The tool works: a deliberate race must be reported (exit 66).
    if TSAN_EXTRA="" tsan --test threads -- --exact tsan_control_a_deliberate_race --include-ignored >"$target_dir/tsan-control.log" 2>&1; then
        echo "sanitizers: tsan: the deliberate race was NOT reported: the build is not instrumented"; failures=$((failures + 1))
    elif grep -q "WARNING: ThreadSanitizer: data race" "$target_dir/tsan-control.log"; then
        echo "sanitizers: tsan: the deliberate race is reported (the tool works)"
        if tsan --no-fail-fast "${tsan_tests[@]}" -- --test-threads=2 "${tsan_skip[@]}" 2>&1 | tee "$target_dir/tsan.log" | grep -E "^test result|WARNING: ThreadSanitizer|FAILED"; then
            if grep -q "WARNING: ThreadSanitizer" "$target_dir/tsan.log" || grep -q "FAILED\|error: test failed" "$target_dir/tsan.log"; then
                echo "sanitizers: tsan: FAILED"; failures=$((failures + 1))
            else
                echo "sanitizers: tsan: clean ($(grep -c '^test .* ok$' "$target_dir/tsan.log") tests)"
            fi
        else
            echo "sanitizers: tsan: FAILED"; failures=$((failures + 1))
        fi
    else
        echo "sanitizers: tsan: the control did not build or run:"; tail -30 "$target_dir/tsan-control.log"; failures=$((failures + 1))
    fi
fi

echo "sanitizers: $failures failing runs"
exit $((failures > 0))
