#!/usr/bin/env bash
# Runs the vendored str0m's own unit tests (vendor/str0m/src, about 870),
# patches and all, which `cargo test` here does not: the crate's
# dev-dependencies are not vendored, and its Cargo.toml names crypto
# backends this index does not have.
#
# It copies vendor/str0m to a temporary directory, drops the other crypto
# backends (openssl, apple, rust-crypto, wincrypto, drv) from the copy's
# manifest, adds the three dev-dependencies its tests use (serde_json,
# tracing-subscriber, systemstat, from crates.io), points str0m-aws-lc-rs,
# dimpl and is at the vendored copies as streamd does, and runs
# `cargo test --lib` there (built in target/str0m-unit-tests). Two SDP
# tests read docs/chrome-sdp.json from str0m's
# repository, which the crate does not ship: they are skipped, by name, and
# the script says so.
#
# usage: bash scripts/str0m-unit-tests.sh [TEST FILTER]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/vendor/str0m" "$work/str0m"
cp "$root/Cargo.lock" "$work/str0m/"
mkdir -p "$work/str0m/docs"
echo '[]' > "$work/str0m/docs/chrome-sdp.json"
python3 - "$work/str0m/Cargo.toml" "$root" <<'EOF'
import re, sys
path, root = sys.argv[1], sys.argv[2]
s = open(path).read()
gone = ['str0m-openssl', 'str0m-apple-crypto', 'str0m-rust-crypto', 'str0m-wincrypto', 'drv']
for dep in gone:
    s, n = re.subn(r'\n\[(target\.[^\]]*\.)?dependencies\.' + re.escape(dep) + r'\][^\[]*', '\n', s)
    assert n >= 1, f'no [dependencies.{dep}] in the manifest: update this script'
for feature in ['apple-crypto', 'drv', 'openssl', 'rust-crypto', 'vendored', 'wincrypto', 'wincrypto-dimpl']:
    s, n = re.subn(r'\n' + re.escape(feature) + r' = [^\n]*', '', s)
    assert n == 1, f'no feature {feature}: update this script'
s, n = re.subn(r'\nopenssl-dimpl = \[[^\]]*\]', '', s)
assert n == 1, 'no feature openssl-dimpl: update this script'
s += f'''
[dev-dependencies]
serde_json = "1"
tracing-subscriber = {{ version = "0.3", features = ["env-filter"] }}
systemstat = "0.2"

[patch.crates-io]
str0m-aws-lc-rs = {{ path = "{root}/vendor/str0m-aws-lc-rs" }}
dimpl = {{ path = "{root}/vendor/dimpl" }}
is = {{ path = "{root}/vendor/is" }}

[workspace]
'''
open(path, 'w').write(s)
EOF
echo "str0m-unit-tests: skipping sdp::data::test::{fast_and_easy_parse_agree,invalid_sdp_keeps_the_detailed_error} (they read docs/chrome-sdp.json, which the crate does not ship)"
cd "$work/str0m"
CARGO_TARGET_DIR="$root/target/str0m-unit-tests" cargo test --lib -- "$@" \
    --skip sdp::data::test::fast_and_easy_parse_agree \
    --skip sdp::data::test::invalid_sdp_keeps_the_detailed_error
