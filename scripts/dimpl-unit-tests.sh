#!/usr/bin/env bash
# Runs the vendored dimpl's own unit tests (vendor/dimpl/src, about 370),
# patches and all, which `cargo test` here does not: dimpl is a patched
# dependency, not a member, and its dev-dependencies are not vendored.
#
# It copies vendor/dimpl to a temporary directory, adds the one
# dev-dependency its unit tests use (x509-parser, from crates.io, already
# in streamd's Cargo.lock through rcgen's tree), makes the copy a
# workspace of its own, and runs `cargo test --lib` there with its default
# features (aws-lc-rs and rcgen; built in target/dimpl-unit-tests).
#
# usage: bash scripts/dimpl-unit-tests.sh [TEST FILTER]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/vendor/dimpl" "$work/dimpl"
cp "$root/Cargo.lock" "$work/dimpl/"
grep -q '^\[dev-dependencies\]' "$work/dimpl/Cargo.toml" &&
    { echo "dimpl-unit-tests: vendor/dimpl/Cargo.toml has dev-dependencies now: update this script" >&2; exit 1; }
cat >> "$work/dimpl/Cargo.toml" <<'TOML'

[dev-dependencies]
x509-parser = "0.18"

[workspace]
TOML
cd "$work/dimpl"
CARGO_TARGET_DIR="$root/target/dimpl-unit-tests" cargo test --lib -- "$@"
