#!/usr/bin/env bash
# Publishes a test pattern with a tone to streamd, as the seed's
# test-stream.sh did.
#
#   tools/test-stream.sh                      # creates a stream via the API
#                                             # (STREAMD_TOKEN, or `streamd token`)
#   tools/test-stream.sh rtmp://HOST:1935/live/ID?key=KEY   # an existing one
#
# Environment: STREAMD_HTTP (default http://localhost:3333), STREAMD_RTMP
# (default rtmp://localhost:1935), SIZE (1280x720), DURATION in seconds
# (0, the default: until stopped).
set -euo pipefail
http=${STREAMD_HTTP:-http://localhost:3333}
rtmp=${STREAMD_RTMP:-rtmp://localhost:1935}
size=${SIZE:-1280x720}
seconds=${DURATION:-0}
url=${1:-}
if [ -z "$url" ]; then
    token=${STREAMD_TOKEN:-$(./target/release/streamd token 2>/dev/null || streamd token)}
    created=$(curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"name":"test stream","description":"tools/test-stream.sh"}' "$http/api/streams")
    id=$(printf '%s' "$created" | sed -E 's/.*"id":"([^"]+)".*/\1/')
    key=$(printf '%s' "$created" | sed -E 's/.*"streamKey":"([^"]+)".*/\1/')
    app=$(printf '%s' "$created" | sed -E 's/.*"app":"([^"]+)".*/\1/')
    url="$rtmp/$app/$id?key=$key"
    echo "stream $id"
    echo "  WebRTC  ws://${http#http://}/$app/$id"
    echo "  LL-HLS  $http/$app/$id/llhls.m3u8"
    echo "  pages   $http/webrtc-test.html?src=ws://${http#http://}/$app/$id"
    echo "          $http/direct-hls-test.html?src=$http/$app/$id/llhls.m3u8"
fi
duration=()
[ "$seconds" != 0 ] && duration=(-t "$seconds")
echo "publishing to $url (Ctrl-C stops)"
exec ffmpeg -hide_banner -loglevel warning -nostdin -re \
    -f lavfi -i "testsrc2=size=$size:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" "${duration[@]}" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 30 -bf 0 -b:v 2500k \
    -c:a aac -b:a 128k -ac 2 -f flv "$url"
