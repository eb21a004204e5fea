#!/usr/bin/env bash
# Installs what streamd needs, builds it, and runs it on its built-in
# defaults (RTMP on 1935, HTTP on 3333). Extra arguments go to streamd,
# e.g. `scripts/run.sh --config config/streamd.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

install_runtime_deps
ensure_rust
build_console
cargo build --release --locked

host=$(hostname -I 2>/dev/null | awk '{print $1}')
host=${host:-127.0.0.1}
cat <<MSG

streamd is starting (Ctrl-C stops it). With the default configuration
publishing needs a stream created through the API (state in ./data):

  Console          http://$host:3333/  (paste the API token below)
  API token        TOKEN=\$(./target/release/streamd token)
  Create a stream  curl -s -H "Authorization: Bearer \$TOKEN" -H 'content-type: application/json' \\
                     -d '{"name":"My stream"}' http://$host:3333/api/streams
                   (answers its "id" and "streamKey")
  Publish (OBS)    Server:      rtmp://$host:1935/live
                   Stream key:  the streamKey
  Publish (ffmpeg) ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine \\
                     -c:v libx264 -preset veryfast -g 30 -bf 0 -c:a aac -f flv "rtmp://$host:1935/live/ID?key=KEY"
  Play (LL-HLS)    http://$host:3333/live/ID/llhls.m3u8
  Play (WebRTC)    OvenPlayer, source ws://$host:3333/live/ID
  API reference    http://$host:3333/api/openapi.json
  Metrics          http://$host:3333/metrics

MSG
exec ./target/release/streamd "$@"
