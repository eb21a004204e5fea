#!/usr/bin/env python3
"""Plays an OME-style WebRTC stream with aiortc, an independent WebRTC stack
(Python: aioice, pylibsrtp, PyAV decoders), and prints one JSON line.

usage: python3 aiortc_viewer.py WS_URL SECONDS [RENDITION]
  e.g. python3 aiortc_viewer.py ws://127.0.0.1:3333/live/cam 10
       python3 aiortc_viewer.py ws://127.0.0.1:3333/live/cam 10 180p
       python3 aiortc_viewer.py http://127.0.0.1:3333/live/cam/whep 10

An http(s) URL is a WHEP endpoint: it POSTs its offer there, plays the
answer for SECONDS and DELETEs the session (whep_status,
whep_delete_status in the report).

It speaks OvenPlayer's signalling: request_offer -> offer {id, peer_id, sdp,
candidates} -> answer {id, peer_id:0, sdp:{type, sdp}}; decodes every video
and audio frame it receives for SECONDS (counted from the WebSocket opening);
with RENDITION, sends change_rendition {rendition_name: RENDITION, auto:false}
half-way through; then sends {command:'stop', id} and closes.

It reads the glass-to-glass clock the test publisher draws into every
picture and clicks on every second (tests/common/clock.rs describes the
code): `clock` is the age of each decoded picture, taken when aiortc hands
it over, with nothing the server stamps. A picture whose presentation time
is within 1 ms of the next one's is never on screen (no display refreshes
that fast), so it is not read (`superseded` counts them): a server that starts a joiner from the group in progress
presses that group's timestamps together, and a player shows only its
last picture. Each picture is read when the next arrives, so the pictures
skipped cost the reader nothing; `audio_clock` is the age modulo
1 s of each click heard, and `av_offset_ms` how much later the sound comes
than the picture (from the two, modulo 1 s, so within +-500 ms).

Report: {video_frames, sizes, audio_frames, notifications, errors, clock, ...}.
The exit code is 0 whether or not media arrived (judge the JSON); nonzero
only if the script itself fails. Requirements: requirements.txt next to this
file (pip install -r tests/python/requirements.txt).
"""

import array
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

# aioice gathers host candidates from every interface but skips loopback;
# the server is on loopback, so offer exactly 127.0.0.1 (or, for a server
# on another test host, STREAMD_VIEWER_IP: this host's address there).
VIEWER_IP = os.environ.get("STREAMD_VIEWER_IP", "127.0.0.1")
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [VIEWER_IP]

# STREAMD_RELAY_ONLY=1: gather no host candidates at all and use the TURN
# servers the offer names (`iceServers`), so media can only flow through
# the TURN relay, as for a viewer whose network allows nothing else.
RELAY_ONLY = os.environ.get("STREAMD_RELAY_ONLY") == "1"
if RELAY_ONLY:
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: []


BLOCKS = 26
WRAP = 1_000_000


def read_clock(frame):
    """The code in a decoded picture's luma, or None if it does not read."""
    plane = frame.planes[0]
    width, height, stride = frame.width, frame.height, plane.line_size
    strip = height // 8
    if width < BLOCKS * 2 or strip < 2:
        return None
    luma = memoryview(bytes(plane))
    bits = []
    for b in range(BLOCKS):
        left = width * b / BLOCKS
        x0 = int(left + width / BLOCKS * 0.3)
        x1 = int(left + width / BLOCKS * 0.7)
        total = n = 0
        for y in range(strip // 4, strip * 3 // 4):
            row = luma[y * stride + x0 : y * stride + x1 + 1]
            total += sum(row)
            n += len(row)
        bits.append(total > 128 * max(n, 1))
    if not bits[0] or bits[1]:
        return None
    ms = 0
    for bit in bits[2:22]:
        ms = ms * 2 + bit
    check = 0
    for bit in bits[22:26]:
        check = check * 2 + bit
    return ms if ms < WRAP and ms % 13 == check else None


def age_ms(code, now_ms):
    age = (int(now_ms) % WRAP - code) % WRAP
    return age - WRAP if age > WRAP - 60_000 else age


def quantile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else None


async def run(ws_url, seconds, rendition):
    t0 = time.monotonic()

    def ms():
        return round((time.monotonic() - t0) * 1000)

    report = {
        "video_frames": 0,
        "sizes": {},
        "key_frames": 0,
        "key_frame_ms": [],
        "audio_frames": 0,
        "audio_samples": 0,
        "audio_format": None,
        "first_video_ms": None,
        "first_audio_ms": None,
        "offer_ms": None,
        "connected_ms": None,
        "ice_states": [],
        "connection_states": [],
        "tracks": [],
        "size_changes": [],
        "notifications": [],
        "server_messages": [],
        "errors": [],
        "ws_close": None,
        "seconds": seconds,
    }
    clock = {"frames": 0, "read": 0, "unreadable": 0, "backwards": 0, "superseded": 0, "agesMs": [], "first": None, "last": None}
    pending = [None]  # (frame, pts, handed over at ms) not yet read

    def read_picture(frame, _pts, at_ms):
        code = read_clock(frame)
        if code is None:
            clock["unreadable"] += 1
            return
        clock["read"] += 1
        clock["agesMs"].append(age_ms(code, at_ms))
        if clock["first"] is None:
            clock["first"] = code
        if clock["last"] is not None and (code - clock["last"]) % WRAP > WRAP // 2:
            clock["backwards"] += 1
        clock["last"] = code
    clicks = []  # ages modulo 1 s of the clicks heard
    loud = [False]
    pc = None
    consumers = []
    session_id = None

    async def consume(track):
        kind = track.kind
        while True:
            try:
                frame = await track.recv()
                handed_over = time.time() * 1000
            except MediaStreamError:
                return
            except Exception as e:  # decoder or transport trouble
                report["errors"].append(f"{kind} recv: {type(e).__name__}: {e}")
                return
            if kind == "video":
                report["video_frames"] += 1
                if report["first_video_ms"] is None:
                    report["first_video_ms"] = ms()
                size = f"{frame.width}x{frame.height}"
                if not report["size_changes"] or report["size_changes"][-1]["size"] != size:
                    report["size_changes"].append({"t": ms(), "size": size, "frame": report["video_frames"]})
                report["sizes"][size] = report["sizes"].get(size, 0) + 1
                clock["frames"] += 1
                # Read a picture once the next one shows it reached the
                # screen (its age still taken at its own hand-over).
                pts = None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base)
                held = pending[0]
                if held is not None:
                    if pts is not None and held[1] is not None and 0 <= pts - held[1] < 0.001:
                        clock["superseded"] += 1  # never on screen
                    else:
                        read_picture(*held)
                pending[0] = (frame, pts, handed_over)
                if getattr(frame, "key_frame", False):
                    report["key_frames"] += 1
                    report["key_frame_ms"].append(ms())
            else:
                report["audio_frames"] += 1
                report["audio_samples"] += frame.samples
                heard = time.time() * 1000
                if frame.format.name == "s16":
                    samples = array.array("h", bytes(frame.planes[0])[: frame.samples * len(frame.layout.channels) * 2])
                    for i, v in enumerate(samples):
                        if abs(v) > 4000:
                            if not loud[0]:
                                # The click starts here: sample i of the frame
                                # handed over now.
                                at = heard + (i // len(frame.layout.channels)) * 1000 / frame.sample_rate
                                clicks.append(round(at % 1000))
                            loud[0] = True
                            break
                    else:
                        loud[0] = False
                if report["first_audio_ms"] is None:
                    report["first_audio_ms"] = ms()
                    report["audio_format"] = {
                        "rate": frame.sample_rate,
                        "layout": frame.layout.name,
                        "format": frame.format.name,
                        "samples_per_frame": frame.samples,
                    }

    async def signal_ome():
        nonlocal pc, session_id
        async with connect(ws_url, open_timeout=10, max_size=None) as ws:
            report["ws_open_ms"] = ms()
            await ws.send(json.dumps({"command": "request_offer"}))
            deadline = t0 + seconds
            switched = rendition is None
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if not switched and session_id is not None and now >= t0 + seconds / 2:
                    switched = True
                    await ws.send(
                        json.dumps({"command": "change_rendition", "id": session_id, "rendition_name": rendition, "auto": False})
                    )
                    report["change_rendition_sent_ms"] = ms()
                timeout = deadline - now
                if not switched:
                    timeout = min(timeout, max(0.05, t0 + seconds / 2 - now))
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=timeout)
                except asyncio.TimeoutError:
                    continue
                except Exception as e:
                    report["errors"].append(f"websocket closed early: {type(e).__name__}: {e}")
                    report["ws_close"] = {"t": ms(), "code": ws.close_code, "reason": ws.close_reason}
                    break
                try:
                    msg = json.loads(raw)
                except ValueError:
                    report["errors"].append(f"non-JSON message: {raw[:200]!r}")
                    continue
                if isinstance(msg, dict) and msg.get("error"):
                    report["errors"].append(f"server error: {json.dumps(msg)[:300]}")
                    continue
                cmd = msg.get("command") if isinstance(msg, dict) else None
                if cmd == "offer":
                    report["offer_ms"] = ms()
                    session_id = msg["id"]
                    report["offer"] = {k: v for k, v in msg.items() if k != "sdp"}
                    servers = []
                    if RELAY_ONLY:
                        for srv in msg.get("iceServers") or []:
                            servers.append(
                                RTCIceServer(urls=srv["urls"], username=srv.get("username"), credential=srv.get("credential"))
                            )
                        if not servers:
                            report["errors"].append("relay only, but the offer names no iceServers")
                    pc = RTCPeerConnection(RTCConfiguration(iceServers=servers)) if RELAY_ONLY else RTCPeerConnection()

                    watch(pc)

                    sdp = msg["sdp"]
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp["sdp"], type=sdp["type"]))
                    # OME puts its candidates only in `candidates`; add any the
                    # SDP does not already carry.
                    added = 0
                    for c in msg.get("candidates") or []:
                        line = c.get("candidate") or ""
                        if not line:
                            continue
                        body = line.split(":", 1)[1] if line.startswith("candidate:") else line
                        if ("a=candidate:" + body) in sdp["sdp"]:
                            continue
                        cand = candidate_from_sdp(body)
                        cand.sdpMid = c.get("sdpMid")
                        cand.sdpMLineIndex = c.get("sdpMLineIndex", 0)
                        await pc.addIceCandidate(cand)
                        added += 1
                    report["offer_candidates_added"] = added
                    answer = await pc.createAnswer()
                    await pc.setLocalDescription(answer)
                    report["local_candidate_types"] = sorted(
                        {line.split(" typ ")[1].split()[0] for line in pc.localDescription.sdp.splitlines() if " typ " in line}
                    )
                    await ws.send(
                        json.dumps(
                            {
                                "command": "answer",
                                "id": session_id,
                                "peer_id": 0,
                                "sdp": {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp},
                            }
                        )
                    )
                    report["answer_ms"] = ms()
                elif cmd == "notification":
                    report["notifications"].append({"t": ms(), "type": msg.get("type"), "message": msg.get("message")})
                else:
                    report["server_messages"].append({"t": ms(), "msg": msg})

            if session_id is not None and report["ws_close"] is None:
                await ws.send(json.dumps({"command": "stop", "id": session_id}))
                # Anything the server says after stop (it should say nothing
                # and may close).
                try:
                    while True:
                        raw = await asyncio.wait_for(ws.recv(), timeout=0.5)
                        report["server_messages"].append({"t": ms(), "after_stop": True, "msg": raw[:300]})
                except asyncio.TimeoutError:
                    pass
                except Exception:
                    report["ws_close"] = {"t": ms(), "code": ws.close_code, "reason": ws.close_reason, "by": "server after stop"}
        if report["ws_close"] is None:
            report["ws_close"] = {"t": ms(), "code": ws.close_code, "reason": ws.close_reason, "by": "client"}

    def watch(pc):
        @pc.on("track")
        def on_track(track):
            report["tracks"].append({"t": ms(), "kind": track.kind})
            consumers.append(asyncio.ensure_future(consume(track)))

        @pc.on("iceconnectionstatechange")
        def on_ice():
            report["ice_states"].append({"t": ms(), "state": pc.iceConnectionState})

        @pc.on("connectionstatechange")
        def on_conn():
            report["connection_states"].append({"t": ms(), "state": pc.connectionState})
            if pc.connectionState == "connected" and report["connected_ms"] is None:
                report["connected_ms"] = ms()

    async def signal_whep():
        # WHEP: our offer (receive-only H.264 and Opus) by POST, the
        # answer back; DELETE on the session's Location at the end.
        nonlocal pc
        pc = RTCPeerConnection()
        watch(pc)
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())

        def http(method, url, body=None, headers=None):
            req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, dict(r.headers), r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read().decode()

        status, headers, body = await asyncio.to_thread(
            http, "POST", ws_url, pc.localDescription.sdp.encode(), {"content-type": "application/sdp"}
        )
        report["whep_status"] = status
        report["offer_ms"] = ms()
        if status != 201:
            report["errors"].append(f"WHEP POST: {status} {body[:300]}")
            return
        location = headers.get("Location") or headers.get("location")
        report["whep_location"] = location
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        await asyncio.sleep(max(0.0, t0 + seconds - time.monotonic()))
        origin = "/".join(ws_url.split("/")[:3])
        status, _, body = await asyncio.to_thread(http, "DELETE", origin + location)
        report["whep_delete_status"] = status

    if ws_url.startswith("http"):
        await signal_whep()
    else:
        await signal_ome()

    if pc is not None:
        await pc.close()
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    if pending[0] is not None:
        read_picture(*pending[0])
    report["elapsed_ms"] = ms()
    ages = clock.pop("agesMs")
    first, last = clock.pop("first"), clock.pop("last")
    clock.update(
        {
            "agesMs": ages,
            "p50Ms": quantile(ages, 0.5),
            "p95Ms": quantile(ages, 0.95),
            "spanMs": 0 if first is None else (last - first) % WRAP,
        }
    )
    report["clock"] = clock
    report["audio_clock"] = {"clicks": len(clicks), "agesMod1sMs": clicks}
    if clicks and ages:
        video = quantile(ages, 0.5) % 1000
        report["av_offset_ms"] = quantile([(c - video + 500) % 1000 - 500 for c in clicks], 0.5)
    # Compact the playlist: it is large and the Rust side only needs names.
    for n in report["notifications"]:
        m = n.get("message")
        if n["type"] == "playlist" and isinstance(m, dict):
            n["renditions"] = [
                {
                    "name": r.get("name"),
                    "video": (r.get("video_track") or {}).get("video", {}).get("codec"),
                    "width": (r.get("video_track") or {}).get("video", {}).get("width"),
                    "height": (r.get("video_track") or {}).get("video", {}).get("height"),
                    "audio": (r.get("audio_track") or {}).get("audio", {}).get("codec"),
                }
                for r in m.get("renditions") or []
            ]
            n["message"] = {k: v for k, v in m.items() if k != "renditions"}
    return report


def main():
    if len(sys.argv) < 3:
        print("usage: python3 aiortc_viewer.py WS_URL SECONDS [RENDITION]", file=sys.stderr)
        sys.exit(2)
    ws_url = sys.argv[1]
    seconds = float(sys.argv[2])
    rendition = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        report = asyncio.run(run(ws_url, seconds, rendition))
    except (OSError, asyncio.TimeoutError, WebSocketException) as e:
        # Could not reach the server at all: still a report, not a crash.
        report = {"video_frames": 0, "sizes": {}, "audio_frames": 0, "notifications": [], "errors": [f"connect: {type(e).__name__}: {e}"]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
