#!/usr/bin/env bash
# Installs what the tests need (apt packages, the npm players) and runs the
# whole suite: formatting and lint gates, unit, scenario and end-to-end
# tests (real ffmpeg, ffprobe, hls.js and OvenPlayer in headless Chromium, aiortc), and the
# benchmarks once each as a smoke test, and each fuzz target briefly. CI runs
# exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

install_test_deps
ensure_rust
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
install_python_test_deps
build_console
start_test_postgres

# A fresh clone gains nothing from incremental state; it only costs disk.
export CARGO_INCREMENTAL=0

cargo fmt --check
cargo fmt --check --manifest-path fuzz/Cargo.toml
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets
# The vendored str0m's own unit tests, run with streamd's patches (its
# dev-dependencies are not vendored; the script adds them).
bash scripts/str0m-unit-tests.sh
# And those of its DTLS (dimpl) and ICE agent (is), vendored the same way.
bash scripts/vendor-unit-tests.sh dimpl
bash scripts/vendor-unit-tests.sh is

# The fuzz targets: built with coverage instrumentation (stable toolchain)
# and run briefly from their seeds; a crash fails the run. Long campaigns:
# bash fuzz/run.sh all SECONDS (benches/README.md has the figures).
bash fuzz/run.sh all 15
