#!/usr/bin/env bash
# Runs a vendored crate's own unit tests (in its src/), patches and all,
# which `cargo test` here does not: the crate is a patched dependency, not
# a member, and its dev-dependencies are not vendored.
#   dimpl (the DTLS under str0m, about 370 tests): adds x509-parser;
#   is (str0m's ICE agent, about 110): adds serde_json and
#   tracing-subscriber.
# All are from crates.io and already in streamd's Cargo.lock. It copies
# vendor/CRATE to a temporary directory, adds those dev-dependencies, makes
# the copy a workspace of its own, and runs `cargo test --lib` there with
# its default features (built in target/vendor-unit-tests).
# (str0m's own: scripts/str0m-unit-tests.sh, which needs more changes.)
#
# usage: bash scripts/vendor-unit-tests.sh CRATE [TEST FILTER]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
crate=${1:?usage: vendor-unit-tests.sh dimpl|is [TEST FILTER]}
shift
case "$crate" in
    dimpl) dev='x509-parser = "0.18"' ;;
    is) dev='serde_json = "1"
tracing-subscriber = { version = "0.3", features = ["env-filter", "std"] }' ;;
    *) echo "vendor-unit-tests: no recipe for $crate" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/vendor/$crate" "$work/$crate"
cp "$root/Cargo.lock" "$work/$crate/"
grep -q '^\[dev-dependencies' "$work/$crate/Cargo.toml" &&
    { echo "vendor-unit-tests: vendor/$crate/Cargo.toml has dev-dependencies now: update this script" >&2; exit 1; }
cat >> "$work/$crate/Cargo.toml" <<TOML

[dev-dependencies]
$dev

[workspace]
TOML
cd "$work/$crate"
CARGO_TARGET_DIR="$root/target/vendor-unit-tests" cargo test --lib -- "$@"
