# streamd's container image: built on the Rust image, run on Debian slim
# with an FFmpeg built for what streamd uses, as a non-root user under an
# init. Debian's own libavcodec59 brings every codec library Debian builds
# FFmpeg with (about 270 MB of the image); this FFmpeg is Debian's source
# (5.1, with its security patches) configured with only streamd's decoders
# (H.264, HEVC, AV1 through libdav1d, AAC, Opus) and encoders (libx264,
# libopus, AAC), about 5 MB.
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

# FFmpeg from Debian's source package, with only what streamd calls
# (src/transcode/codec.rs): libavcodec, libavutil, libswscale and
# libswresample, and an empty libavformat the bindings build against.
FROM ${RUST_IMAGE} AS ffmpeg
WORKDIR /usr/src/ffmpeg
RUN printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/debian-src.sources \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential dpkg-dev xz-utils nasm pkg-config \
        libx264-dev libopus-dev libdav1d-dev \
    && apt-get source -q ffmpeg \
    && mv ffmpeg-5.* src \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /usr/src/ffmpeg/src
RUN ./configure --prefix=/usr/local --enable-gpl --enable-shared --disable-static \
        --disable-programs --disable-doc --disable-everything --disable-autodetect \
        --disable-network --disable-avdevice --disable-avfilter --disable-postproc \
        --enable-libx264 --enable-libopus --enable-libdav1d \
        --enable-decoder=h264,hevc,aac,opus,libdav1d \
        --enable-encoder=libx264,libopus,aac \
    && make -j"$(nproc)" \
    && make install \
    && ldconfig \
    && mkdir /opt/ffmpeg-runtime \
    && cp -a /usr/local/lib/lib*.so.* /opt/ffmpeg-runtime/

FROM ffmpeg AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        clang libclang-dev \
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
COPY --from=ffmpeg /opt/ffmpeg-runtime/ /usr/local/lib/
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates tini \
        libx264-164 libopus0 libdav1d6 \
        libsrt1.5-openssl \
    && ldconfig \
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
