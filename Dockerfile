# streamd's container image: built on the Rust image, run on Debian slim
# with only the FFmpeg libraries streamd links (libavcodec, libavutil,
# libswscale, libswresample), as a non-root user under an init.
#
#   docker build -t streamd .        (or: podman build -t streamd .)
#   docker run -p 1935:1935 -p 3333:3333 -p 3334:3334 -p 3478:3478 \
#     -p 9999:9999/udp -p 10000-10009:10000-10009/udp -p 10100:10100/udp \
#     -v streamd-data:/data streamd
#
# Configuration: /etc/streamd/streamd.toml (config/container.toml), and
# any key as STREAMD_SECTION__KEY in the environment. The WebRTC candidate
# address: STREAMD_HOST_IP (the host's public IP).
# scripts/build-image.sh builds it where no registry can be reached.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang libclang-dev pkg-config \
        libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev \
        libavutil-dev libswscale-dev libswresample-dev \
        libsrt-openssl-dev \
        nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild them (the
# patched str0m is one: vendor/str0m/PATCHES.md).
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && awk '/^\[\[bench\]\]/ { getline; gsub(/name = |"/, ""); print "fn main() {}" > ("benches/" $0 ".rs") }' Cargo.toml \
    && cargo build --release --locked --bin streamd \
    && rm -rf src benches
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin streamd \
    && strip target/release/streamd
RUN npm ci --prefix web --no-audit --no-fund --loglevel=error \
    && npm run --prefix web --silent build

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates tini \
        libavcodec59 libavutil57 libswscale6 libswresample4 \
        libsrt1.5-openssl \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 streamd \
    && useradd --system --uid 10001 --gid streamd --home-dir /data --no-create-home streamd \
    && mkdir -p /data /etc/streamd \
    && chown streamd:streamd /data
COPY --from=build /src/target/release/streamd /usr/local/bin/streamd
COPY --from=build /src/web/dist /usr/share/streamd/web
COPY config/container.toml /etc/streamd/streamd.toml
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# RTMP, HTTP (LL-HLS, signalling, API, console), HTTPS/WSS, ICE-TCP,
# WebRTC media (one UDP port per engine: 10 engines in container.toml).
EXPOSE 1935/tcp 3333/tcp 3334/tcp 3478/tcp 9999/udp 10000-10009/udp 10100/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/streamd"]
CMD ["--config", "/etc/streamd/streamd.toml"]
