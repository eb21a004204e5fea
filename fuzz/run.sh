#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the
# stable toolchain (the same codegen flags cargo-fuzz passes, without its
# nightly-only sanitizer flag) and runs them.
#
#   bash fuzz/run.sh build               build every target
#   bash fuzz/run.sh TARGET [SECONDS]    fuzz one target (default 60 s)
#   bash fuzz/run.sh all [SECONDS]       each target in turn
#   bash fuzz/run.sh TARGET -runs=N ...  any libFuzzer flags instead of SECONDS
#
# Seeds are read from fuzz/corpus/TARGET (committed, never written); what the
# fuzzer finds goes to target/fuzz/corpus/TARGET, crashes to
# fuzz/artifacts/TARGET (commit each one as a regression test). Debug
# assertions and overflow checks are on: an overflow is a crash.
set -euo pipefail
cd "$(dirname "$0")"

triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$PWD/../target/fuzz"
# An explicit --target keeps these flags off build scripts and proc macros.
build() { cargo build --locked --release --target "$triple" --bins; }

targets() { sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v streamd-fuzz; }

run() {
    local target=$1
    shift
    local flags=("$@")
    if [ "${#flags[@]}" -eq 0 ]; then flags=(-max_total_time=60); fi
    if [[ "${flags[0]}" =~ ^[0-9]+$ ]]; then flags=(-max_total_time="${flags[0]}" "${flags[@]:1}"); fi
    local work="$CARGO_TARGET_DIR/corpus/$target"
    mkdir -p "$work" "artifacts/$target" "corpus/$target"
    "$CARGO_TARGET_DIR/$triple/release/$target" -artifact_prefix="artifacts/$target/" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${flags[@]}" "$work" "corpus/$target"
}

case "${1:-}" in
    build) build ;;
    all)
        build
        shift
        for t in $(targets); do run "$t" "$@"; done
        ;;
    "") sed -n '2,15p' "$0"; exit 2 ;;
    *)
        build
        run "$@"
        ;;
esac
