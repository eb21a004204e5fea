#!/usr/bin/env bash
# OvenPlayer (headless Chromium) on a network that lets through only TLS to
# the TURN port: two network namespaces joined by a veth pair.
#
#   server  198.18.7.1: streamd (HTTP 3333, WebRTC UDP 10000, ICE-TCP
#           3478), coturn with TLS on 5349 only, an RTMP test publisher
#   client  198.18.7.2: Chromium, whose firewall (iptables OUTPUT) passes
#           loopback, TCP to 198.18.7.1:3333 (the page's signalling) and
#           TCP to 198.18.7.1:5349 (TURN over TLS), and drops the rest: the
#           server's UDP and ICE-TCP candidates cannot be reached.
#
# usage: bash tests/browser/turn_tls.sh STREAMD_BIN CONFIG CERT KEY SECRET SECONDS
#   CONFIG: streamd's, listening on 198.18.7.1 as above, with [turn] urls
#   naming turns:198.18.7.1:5349 and secret SECRET. CERT/KEY: coturn's TLS
#   certificate (its SPKI in CHROMIUM_TRUST_SPKI for Chromium).
# Prints, before ovenplayer.mjs's JSON report (the last line of stdout),
# `DROPPED <packets>`: what the client's firewall dropped (Chromium tried
# the direct paths), and `TURN_TLS <n>`: the TLS sessions coturn logged.
# Run as root (it makes namespaces); exit status is node's, 3 if the
# stream never came up, 2 on a set-up failure.
set -u

if [ $# -ne 6 ]; then
  echo "usage: $0 STREAMD_BIN CONFIG CERT KEY SECRET SECONDS" >&2
  exit 2
fi
STREAMD_BIN=$1
CONFIG=$2
CERT=$3
KEY=$4
SECRET=$5
SECONDS_ARG=$6
NODE=${NODE:-node}
HERE=$(cd "$(dirname "$0")" && pwd)
SERVER_IP=198.18.7.1
CLIENT_IP=198.18.7.2

TAG=$$
SRV=sdsrv$TAG
CLI=sdcli$TAG
WORK=$(mktemp -d /tmp/streamd-turn.XXXXXX)
PIDS=
cleanup() {
  for pid in $PIDS; do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in $PIDS; do kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  ip netns del "$SRV" 2>/dev/null
  ip netns del "$CLI" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "turn_tls.sh: $*" >&2; exit 2; }
command -v iptables >/dev/null || fail "iptables missing (apt-get install iptables; the README's test command does)"
command -v turnserver >/dev/null || fail "coturn missing (apt-get install coturn)"

ip netns add "$SRV" || fail "cannot make a network namespace (run as root)"
ip netns add "$CLI" || fail "cannot make a network namespace"
ip link add "vs$TAG" type veth peer name "vc$TAG" || fail "cannot make a veth pair"
ip link set "vs$TAG" netns "$SRV"
ip link set "vc$TAG" netns "$CLI"
ip -n "$SRV" addr add "$SERVER_IP/24" dev "vs$TAG"
ip -n "$CLI" addr add "$CLIENT_IP/24" dev "vc$TAG"
for ns in "$SRV" "$CLI"; do
  ip -n "$ns" link set lo up
done
ip -n "$SRV" link set "vs$TAG" up
ip -n "$CLI" link set "vc$TAG" up

# The client's firewall: only TLS to TURN (and the signalling) get out.
ipt() { ip netns exec "$CLI" iptables "$@" || fail "iptables $*"; }
ipt -A OUTPUT -o lo -j ACCEPT
ipt -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
ipt -A OUTPUT -p tcp -d "$SERVER_IP" --dport 3333 -j ACCEPT
ipt -A OUTPUT -p tcp -d "$SERVER_IP" --dport 5349 -j ACCEPT
ipt -A OUTPUT -j DROP

STREAMD_LOG=$WORK/streamd.log
TURN_LOG=$WORK/turn.log
FFMPEG_LOG=$WORK/ffmpeg.log
dump_logs() {
  {
    echo "---- streamd log ----"; cat "$STREAMD_LOG"
    echo "---- coturn log ----"; tail -n 60 "$TURN_LOG"
    echo "---- ffmpeg log ----"; cat "$FFMPEG_LOG"
  } >&2
}

ip netns exec "$SRV" "$STREAMD_BIN" --config "$CONFIG" >"$STREAMD_LOG" 2>&1 &
PIDS="$PIDS $!"
ip netns exec "$SRV" turnserver -n -v \
  --listening-ip="$SERVER_IP" --relay-ip="$SERVER_IP" \
  --tls-listening-port=5349 --no-udp --no-tcp --no-dtls \
  --cert="$CERT" --pkey="$KEY" \
  --use-auth-secret --static-auth-secret="$SECRET" --realm=streamd.test \
  --no-cli --simple-log --log-file="$TURN_LOG" \
  --min-port=49200 --max-port=49300 >/dev/null 2>&1 &
PIDS="$PIDS $!"

PUBLISH_SECONDS=$(( SECONDS_ARG + 30 > 60 ? SECONDS_ARG + 30 : 60 ))
FFMPEG_PID=
start_publisher() {
  ip netns exec "$SRV" ffmpeg -hide_banner -loglevel error -nostdin \
    -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -re -f lavfi -i sine=frequency=1000:sample_rate=44100 -map 0:v -map 1:a \
    -t "$PUBLISH_SECONDS" -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 30 -b:v 500k \
    -c:a aac -b:a 64k -ac 2 -f flv "rtmp://$SERVER_IP:1935/live/cam" >>"$FFMPEG_LOG" 2>&1 &
  FFMPEG_PID=$!
  PIDS="$PIDS $FFMPEG_PID"
}
ready=0
deadline=$(( $(date +%s) + 20 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if [ -z "$FFMPEG_PID" ] || ! kill -0 "$FFMPEG_PID" 2>/dev/null; then
    start_publisher
  fi
  code=$(ip netns exec "$SRV" curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
    "http://$SERVER_IP:3333/live/cam/llhls.m3u8")
  if [ "$code" = 200 ]; then ready=1; break; fi
  sleep 0.25
done
if [ "$ready" != 1 ]; then
  echo "turn_tls.sh: the stream never came up" >&2
  dump_logs
  exit 3
fi

OUT=$(ip netns exec "$CLI" "$NODE" "$HERE/ovenplayer.mjs" "ws://$SERVER_IP:3333/live/cam" "$SECONDS_ARG")
rc=$?
REPORT=$(printf '%s\n' "$OUT" | tail -n 1)
if [ "$rc" != 0 ] || ! printf '%s' "$REPORT" | grep -q '"playing":true'; then
  dump_logs
fi
DROPPED=$(ip netns exec "$CLI" iptables -L OUTPUT -v -n -x | awk '$3 == "DROP" { print $1 }')
echo "DROPPED ${DROPPED:-0}"
echo "TURN_TLS $(grep -c -i 'TLS/TCP\|tls' "$TURN_LOG" 2>/dev/null || echo 0)"
printf '%s\n' "$OUT"
exit "$rc"
