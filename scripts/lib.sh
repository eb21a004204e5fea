# Shared set-up for scripts/run.sh and scripts/test.sh (sourced, not run).
# Installs what streamd needs on Debian 12 (bookworm) and makes sure a Rust
# toolchain is present. Idempotent: a second run installs nothing.

set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt packages, installed only when missing.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "==> apt-get install ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# What building and running streamd needs: the FFmpeg libraries it links
# (with libx264 and libopus) and their headers, clang for bindgen, and
# libsrt (SRT ingest; the OpenSSL build, Debian's default).
install_runtime_deps() {
    apt_install ca-certificates curl build-essential pkg-config ffmpeg \
        libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev \
        libswscale-dev libswresample-dev libavutil-dev clang libclang-dev \
        libsrt-openssl-dev
}

# What the test suite needs besides: Chromium for the player tests, Node.js
# to drive it, iproute2 for their loopback-only network namespace, and
# Python for aiortc (an independent WebRTC client).
install_test_deps() {
    install_runtime_deps
    apt_install chromium iproute2 python3 python3-venv
    # The TURN server the TURN tests relay through, and the firewall that
    # leaves the TURN-over-TLS test's client only TLS to it.
    apt_install coturn iptables
    # srt-live-transmit: the SRT tests' raw sender (hand-made MPEG-TS).
    apt_install srt-tools
    # openssl: the fake GCS's service-account key, and its check of V4
    # signatures with an implementation other than the signer's.
    apt_install openssl
    # The serving bench's baseline and load tools (its smoke run is part of
    # the suite): nginx, wrk (HTTP/1.1), h2load (HTTP/2).
    apt_install nginx-light wrk nghttp2-client
    # The WebRTC fan-out bench's baseline (its smoke run is part of the
    # suite too): Janus's streaming plugin, run from the bench's own config
    # directory. Debian enables a system Janus service; it is not wanted.
    if ! command -v janus >/dev/null 2>&1; then
        apt_install janus
        if [ -d /run/systemd/system ]; then as_root systemctl disable --now janus.service || true; fi
    fi
    # ethtool: the WebRTC fan-out bench (and its smoke run) turns on its
    # veth pair's threaded receive path with it (benches/common/net.rs).
    apt_install ethtool
    command -v node >/dev/null 2>&1 || apt_install nodejs npm
    command -v npm >/dev/null 2>&1 || apt_install npm
}

# aiortc and websockets, pinned, in the tests' own virtualenv
# (tests/python/.venv): Debian's Python refuses system-wide pip installs.
install_python_test_deps() {
    local venv=tests/python/.venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
}

# The web console: OvenPlayer and hls.js from npm, built into web/dist
# (served by streamd at /).
build_console() {
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    npm ci --prefix web --no-audit --no-fund --loglevel=error
    npm run --prefix web --silent build
}

# A throwaway Postgres for the storage tests (tests/postgres.rs): its own
# cluster in a temporary directory on a free port of 127.0.0.1, stopped and
# removed when the calling script exits. Exports STREAMD_TEST_POSTGRES. A
# cluster that will not start is fatal: its tests would have nothing to test.
start_test_postgres() {
    apt_install postgresql
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    local dir port
    dir=$(mktemp -d /tmp/streamd-pg.XXXXXX)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    # Postgres will not run as root: as root, run it as the postgres user.
    local as=()
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
        as=(runuser -u postgres --)
    fi
    if ! "${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U streamd >/dev/null ||
        ! "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null; then
        echo "==> error: the test Postgres did not start on 127.0.0.1:$port" >&2
        cat "$dir/log" >&2 2>/dev/null || true
        rm -rf "$dir"
        return 1
    fi
    PG_STOP=("${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop)
    PG_DIR=$dir
    trap 'stop_test_postgres' EXIT
    export STREAMD_TEST_POSTGRES="postgres://streamd@127.0.0.1:$port/postgres"
}

stop_test_postgres() {
    if [ -n "${PG_DIR:-}" ]; then
        "${PG_STOP[@]}" >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
        PG_DIR=
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "==> installing Rust (rustup)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile default
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
}
