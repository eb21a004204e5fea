#!/usr/bin/env bash
# Builds streamd's container image from the Dockerfile with podman (no
# Docker engine needed), then runs the built binary inside it (`--version`,
# `check-config`) and prints the image's size.
#
#   bash scripts/build-image.sh [TAG]        (default streamd:local)
#
# Where the base images cannot be pulled (this project's build machines
# reach only package registries), it makes them locally:
#   - docker.io/library/debian:bookworm-slim: debootstrap (minbase) of
#     bookworm from the machine's Debian mirror, imported with podman;
#   - the Rust build image: that base, the official image's build tools,
#     this machine's Rust toolchain and the certificate authorities it adds
#     (scripts/image/rust-local.Containerfile).
# podman runs with chroot isolation (no user namespaces or cgroups needed);
# `buildah run` runs the binary, since `podman run` cannot here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

TAG=${1:-streamd:local}
RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1.95-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

apt_install podman buildah debootstrap
export BUILDAH_ISOLATION=chroot
podman=(podman)
buildah=(buildah)

have() { "${podman[@]}" image exists "$1"; }
pull() { timeout 60 "${podman[@]}" pull -q "$1" >/dev/null 2>&1; }

work=$(mktemp -d /tmp/streamd-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! have "$RUNTIME_IMAGE" && ! pull "$RUNTIME_IMAGE"; then
    echo "==> no $RUNTIME_IMAGE to pull: debootstrap bookworm from $MIRROR"
    as_root debootstrap --variant=minbase bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log"; exit 1; }
    # What the official slim image also leaves out.
    as_root rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
        "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/log/"*.log \
        "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"*
    as_root tar -C "$work/rootfs" -c . | "${podman[@]}" import - "$RUNTIME_IMAGE" >/dev/null
    as_root rm -rf "$work/rootfs"
fi

if ! have "$RUST_IMAGE" && ! pull "$RUST_IMAGE"; then
    ensure_rust
    toolchain=$(rustc --print sysroot)
    echo "==> no $RUST_IMAGE to pull: making it from $RUNTIME_IMAGE and $toolchain ($(rustc --version))"
    mkdir -p "$work/rust/toolchain" "$work/rust/ca"
    cp /usr/local/share/ca-certificates/*.crt "$work/rust/ca/" 2>/dev/null || true
    cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$work/rust/toolchain/" 2>/dev/null \
        || cp -a "$toolchain/bin" "$toolchain/lib" "$work/rust/toolchain/"
    "${podman[@]}" build --isolation=chroot -q --build-arg "BASE=$RUNTIME_IMAGE" \
        -f scripts/image/rust-local.Containerfile -t "$RUST_IMAGE" "$work/rust" >/dev/null
    rm -rf "$work/rust"
fi

echo "==> podman build -t $TAG ."
start=$(date +%s)
"${podman[@]}" build --isolation=chroot --build-arg "RUST_IMAGE=$RUST_IMAGE" \
    --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" -t "$TAG" .
echo "==> built in $(( $(date +%s) - start )) s"

echo "==> the binary inside the image"
ctr=$("${buildah[@]}" from "$TAG")
trap '"${buildah[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
"${buildah[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/streamd --version
"${buildah[@]}" run --isolation chroot "$ctr" -- /usr/local/bin/streamd check-config /etc/streamd/streamd.toml
"${buildah[@]}" run --isolation chroot "$ctr" -- sh -c 'id -u; ldd /usr/local/bin/streamd | grep -E "libav|libsw"'

size=$("${podman[@]}" image inspect --format '{{.Size}}' "$TAG")
echo "==> $TAG: $(( size / 1000000 )) MB ($size bytes)"
