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
# (with libx264 and libopus) and their headers, and clang for bindgen.
install_runtime_deps() {
    apt_install ca-certificates curl build-essential pkg-config ffmpeg \
        libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev \
        libswscale-dev libswresample-dev libavutil-dev clang libclang-dev
}

# What the test suite needs besides: Chromium for the player tests, Node.js
# to drive it, iproute2 for their loopback-only network namespace, and
# Python for aiortc (an independent WebRTC client).
install_test_deps() {
    install_runtime_deps
    apt_install chromium iproute2 python3 python3-venv
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
