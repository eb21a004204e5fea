#!/usr/bin/env bash
# Runs streamd, an RTMP test publisher and OvenPlayer (ovenplayer.mjs, headless
# Chromium) together inside a fresh loopback-only network namespace, and
# prints ovenplayer.mjs's JSON report as the LAST line of stdout.
#
# usage: unshare -n bash tests/browser/netns.sh STREAMD_BIN CONFIG WS_URL SECONDS
#   e.g. unshare -n bash tests/browser/netns.sh /tmp/streamd-dev /tmp/dev/streamd.toml \
#          ws://127.0.0.1:3333/live/cam 10
#
# Why a namespace: everything (Chromium's ICE included) stays on a private
# `lo`, and the fixed ports in CONFIG are free whatever else runs on the host.
# In it Chromium cannot start its mDNS responder, so ovenplayer.mjs grants
# the page media permission: Chromium then offers a plain 127.0.0.1 host
# candidate (--allow-loopback-in-peer-connection) instead of an mDNS name it
# would wait for forever.
#
# Environment:
#   RTMP_URL   where the publisher pushes (default rtmp://127.0.0.1:1935/live/cam;
#              must match CONFIG's [rtmp] listen and the app/stream of WS_URL);
#              an srt:// URL publishes MPEG-TS over SRT instead (CONFIG's [srt]);
#              an http://…/whip URL publishes over WHIP (H.264 baseline and
#              Opus; FFMPEG must then be an FFmpeg with WHIP, FFmpeg 9);
#              "none": no publisher (the player script publishes itself), and
#              readiness is WS_URL's /healthz
#   PLAYER     the script run with WS_URL SECONDS (default ovenplayer.mjs)
#   CLOCK_FILTER  ffmpeg filter graph drawing the glass-to-glass clock on the
#              publisher's inputs 0:v and 1:a into [v] and [a]
#              (tests/common/clock.rs filter_graph(); the tests set it)
#   RUST_LOG   passed to streamd (e.g. streamd=debug)
#   NODE       node binary (default: node)
#   FFMPEG     the publisher's ffmpeg (default: ffmpeg)
#   STREAMD_LOG_OUT  if set, streamd's log is copied to this file at the end
#
# Readiness: waits (up to 20 s) until http://HOST:PORT/APP/STREAM/llhls.m3u8,
# derived from WS_URL, answers 200, i.e. streamd has the stream.
# Exit status: node's (0 even if the stream did not play: judge the JSON);
# 3 if streamd or the stream never came up. On any failure (no JSON, or
# "playing":false) streamd's log goes to stderr.
set -u

if [ $# -ne 4 ]; then
  echo "usage: unshare -n bash $0 STREAMD_BIN CONFIG WS_URL SECONDS" >&2
  exit 2
fi
STREAMD_BIN=$1
CONFIG=$2
WS_URL=$3
SECONDS_ARG=$4
RTMP_URL=${RTMP_URL:-rtmp://127.0.0.1:1935/live/cam}
PLAYER=${PLAYER:-ovenplayer.mjs}
NODE=${NODE:-node}
HERE=$(cd "$(dirname "$0")" && pwd)

ip link set lo up || { echo "netns.sh: 'ip link set lo up' failed (run under unshare -n as root)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/streamd-netns.XXXXXX)
STREAMD_LOG=$WORK/streamd.log
FFMPEG_LOG=$WORK/ffmpeg.log
STREAMD_PID=
FFMPEG_PID=

cleanup() {
  for pid in $FFMPEG_PID $STREAMD_PID; do
    kill "$pid" 2>/dev/null
  done
  for pid in $FFMPEG_PID $STREAMD_PID; do
    # Give each a moment to exit, then force it.
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ -n "${STREAMD_LOG_OUT:-}" ]; then cp "$STREAMD_LOG" "$STREAMD_LOG_OUT" 2>/dev/null; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dump_logs() {
  {
    echo "---- streamd log ($STREAMD_LOG) ----"
    cat "$STREAMD_LOG"
    echo "---- ffmpeg log ----"
    cat "$FFMPEG_LOG"
  } >&2
}

"$STREAMD_BIN" --config "$CONFIG" >"$STREAMD_LOG" 2>&1 &
STREAMD_PID=$!

# The publisher must outlive the player: at least 60 s, or SECONDS + 30.
PUBLISH_SECONDS=$(( SECONDS_ARG + 30 > 60 ? SECONDS_ARG + 30 : 60 ))
# streamd needs a moment to bind; the publisher starts once it has, and is
# retried until it connects.
start_publisher() {
  local map=(-map 0:v -map 1:a) format=flv video=() audio=(-c:a aac -b:a 64k -ac 2)
  case "$RTMP_URL" in
    srt://*) format=mpegts ;;
    http://*/whip)
      format=whip
      video=(-profile:v baseline -bf 0)
      audio=(-c:a libopus -b:a 64k -ac 2 -ar 48000)
      ;;
  esac
  [ -n "${CLOCK_FILTER:-}" ] && map=(-filter_complex "$CLOCK_FILTER" -map '[v]' -map '[a]')
  "${FFMPEG:-ffmpeg}" -hide_banner -loglevel error -nostdin \
    -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -re -f lavfi -i sine=frequency=1000:sample_rate=44100 "${map[@]}" \
    -t "$PUBLISH_SECONDS" -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 30 -b:v 500k "${video[@]}" \
    "${audio[@]}" -f "$format" "$RTMP_URL" >>"$FFMPEG_LOG" 2>&1 &
  FFMPEG_PID=$!
}

# ws://host:port/app/stream[?query] -> http://host:port/app/stream/llhls.m3u8
HLS_URL=$(printf '%s' "$WS_URL" | sed -E 's#^ws(s?)://#http\1://#; s#\?.*$##; s#/+$##')/llhls.m3u8
if [ "$RTMP_URL" = none ]; then
  HLS_URL=$(printf '%s' "$WS_URL" | sed -E 's#^(https?://[^/]+).*#\1#')/healthz
fi

ready=0
deadline=$(( $(date +%s) + 20 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if ! kill -0 "$STREAMD_PID" 2>/dev/null; then
    echo "netns.sh: streamd exited early" >&2
    break
  fi
  # Only once streamd listens: an SRT caller started earlier can wait on
  # its first handshake for good.
  if [ "$RTMP_URL" != none ] && grep -q "rtmp listening" "$STREAMD_LOG" 2>/dev/null \
      && { [ -z "$FFMPEG_PID" ] || ! kill -0 "$FFMPEG_PID" 2>/dev/null; }; then
    start_publisher
  fi
  # -k: readiness only (an https WS_URL's certificate is the test's own).
  code=$(curl -s -k -o /dev/null -w '%{http_code}' --max-time 2 "$HLS_URL")
  if [ "$code" = 200 ]; then
    ready=1
    break
  fi
  sleep 0.25
done
if [ "$ready" != 1 ]; then
  echo "netns.sh: $HLS_URL never answered 200 within 20 s" >&2
  dump_logs
  exit 3
fi

start=$(date +%s%N)
OUT=$("$NODE" "$HERE/$PLAYER" "$WS_URL" "$SECONDS_ARG")
rc=$?
end=$(date +%s%N)
echo "netns.sh: node $PLAYER exited $rc after $(( (end - start) / 1000000 )) ms" >&2

REPORT=$(printf '%s\n' "$OUT" | tail -n 1)
if [ "$rc" != 0 ] || ! printf '%s' "$REPORT" | grep -q '"playing":true'; then
  dump_logs
fi
# Everything node printed, the JSON report last.
printf '%s\n' "$OUT"
exit "$rc"
