#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/TARGET/*) from the test
fixtures (tests/fixtures/clip-160x120-2s.flv, and the HEVC and AV1 clips): a publisher's chunk stream as
ffmpeg sends it after the handshake, its AMF0 commands and metadata, its FLV
tag bodies and codec configurations, and OME signalling messages. Run it
again after changing it; the output is deterministic."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "..", "tests", "fixtures", "clip-160x120-2s.flv")


def amf_str(s):
    b = s.encode()
    return b"\x02" + struct.pack(">H", len(b)) + b


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(props, marker=b"\x03"):
    out = marker
    for k, v in props:
        out += struct.pack(">H", len(k)) + k.encode() + v
    return out + b"\x00\x00\x09"


def chunks(csid, ts, type_id, sid, payload, size):
    out = bytes([csid]) + ts.to_bytes(3, "big") + len(payload).to_bytes(3, "big")
    out += bytes([type_id]) + struct.pack("<I", sid)
    for i in range(0, max(len(payload), 1), size):
        if i:
            out += bytes([0xC0 | csid])
        out += payload[i : i + size]
    return out


def flv_tags(path):
    d = open(path, "rb").read()
    pos = struct.unpack(">I", d[5:9])[0] + 4
    tags = []
    while pos + 11 <= len(d):
        kind = d[pos]
        size = int.from_bytes(d[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(d[pos + 4 : pos + 7], "big") | (d[pos + 7] << 24)
        body = d[pos + 11 : pos + 11 + size]
        tags.append((kind, ts, body))
        pos += 11 + size + 4
    return tags


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


tags = flv_tags(FIXTURE)
connect = amf_str("connect") + amf_num(1) + amf_obj(
    [("app", amf_str("live")), ("type", amf_str("nonprivate")),
     ("flashVer", amf_str("FMLE/3.0 (compatible; Lavf61.7.100)")),
     ("tcUrl", amf_str("rtmp://127.0.0.1:1935/live"))])
create = amf_str("createStream") + amf_num(4) + b"\x05"
publish = amf_str("publish") + amf_num(5) + b"\x05" + amf_str("cam?key=sk_1") + amf_str("live")
meta = amf_str("@setDataFrame") + amf_str("onMetaData") + amf_obj(
    [("width", amf_num(160)), ("height", amf_num(120)), ("framerate", amf_num(30)),
     ("videocodecid", amf_num(7)), ("audiocodecid", amf_num(10)),
     ("encoder", amf_str("Lavf61.7.100"))], marker=b"\x08\x00\x00\x00\x06")
write("amf0", "connect", connect)
write("amf0", "publish", publish)
write("amf0", "metadata", meta)
write("amf0", "result", amf_str("_result") + amf_num(1) + amf_obj(
    [("fmsVer", amf_str("FMS/3,0,1,123"))]) + b"\x0a\x00\x00\x00\x02\x05\x06" + b"\x0b" + struct.pack(">d", 1.5e12) + b"\x00\x00")

for size, name in [(128, "publish-128"), (4096, "publish-4096")]:
    s = b""
    if size != 128:
        s += chunks(2, 0, 1, 0, struct.pack(">I", size), 128)
    s += chunks(3, 0, 20, 0, connect, size)
    s += chunks(2, 0, 5, 0, struct.pack(">I", 2500000), size)
    s += chunks(3, 0, 20, 0, amf_str("releaseStream") + amf_num(2) + b"\x05" + amf_str("cam"), size)
    s += chunks(3, 0, 20, 0, create, size)
    s += chunks(8, 0, 20, 1, publish, size)
    s += chunks(4, 0, 18, 1, meta, size)
    for kind, ts, body in tags[:12]:
        s += chunks(6 if kind == 9 else 4, ts, kind, 1, body, size)
    s += chunks(3, 0, 20, 0, amf_str("deleteStream") + amf_num(6) + b"\x05" + amf_num(1), size)
    write("rtmp_session", name, b"\x80" + s)  # first byte: feed in pieces of 128
    write("rtmp_chunk", name, s)

video = [b for k, _, b in tags if k == 9]
audio = [b for k, _, b in tags if k == 8]
write("flv_tags", "avc-sequence-header", video[0])
write("flv_tags", "avc-keyframe", video[1][:2000])
write("flv_tags", "avc-inter", video[2][:2000])
write("flv_tags", "aac-sequence-header", audio[0])
write("flv_tags", "aac-frame", audio[1])
write("codec_config", "avcC", video[0][5:])
avcc = video[0][5:]
sps_len = struct.unpack(">H", avcc[6:8])[0]
write("codec_config", "sps", avcc[8 : 8 + sps_len])
write("codec_config", "aac-asc", audio[0][2:])

# Enhanced RTMP: FFmpeg 9's HEVC and AV1 (tests/fixtures/README.md).
for codec in ("hevc", "av1"):
    path = os.path.join(HERE, "..", "tests", "fixtures", f"clip-{codec}-160x120-1s.flv")
    ev = [b for k, _, b in flv_tags(path) if k == 9]
    start = next(b for b in ev if b[0] & 0x8F == 0x80)
    frames = [b for b in ev if b[0] & 0x0F in (1, 3)]
    write("flv_tags", f"{codec}-sequence-start", start)
    write("flv_tags", f"{codec}-keyframe", frames[0][:2000])
    write("flv_tags", f"{codec}-inter", frames[1][:2000])
    write("flv_tags", f"{codec}-metadata", next(b for b in ev if b[0] & 0x0F == 4))
    # The same inter frame as a one-track multitrack packet.
    write("flv_tags", f"{codec}-multitrack", bytes([0xA6, frames[1][0] & 0x0F]) + frames[1][1:5] + b"\x00" + frames[1][5:2000])
    write("codec_config", "hvcC" if codec == "hevc" else "av1C", start[5:])
    if codec == "av1":
        write("codec_config", "av1-frame", frames[0][5:2000])

answer = {"command": "answer", "id": 1, "peer_id": 0, "sdp": {"type": "answer", "sdp": (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:active\r\n"
    "a=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n"
    "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n"
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:active\r\n"
    "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n")}}
for name, msg in [
    ("request_offer", {"command": "request_offer"}),
    ("answer", answer),
    ("candidate", {"command": "candidate", "id": 1, "candidates": [
        {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMLineIndex": 0}]}),
    ("change_rendition", {"command": "change_rendition", "id": 1, "rendition_name": "480p", "auto": False}),
    ("stop", {"command": "stop", "id": 1}),
]:
    write("signalling", name, json.dumps(msg).encode())


# A WHIP offer as a browser sends it: Opus and H.264 (with RTX), then the
# same with two simulcast layers (RFC 8853) instead of SSRCs.
def whip_offer(simulcast):
    common = (
        "c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=ice-options:trickle\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    )
    video_tail = (
        "a=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n" if simulcast
        else "a=ssrc-group:FID 2001 2002\r\na=ssrc:2001 cname:x\r\na=ssrc:2002 cname:x\r\n"
    )
    return (
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n" + common + "a=mid:0\r\n"
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendonly\r\na=msid:- a\r\n"
        "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\n"
        "a=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:1001 cname:x\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n" + common + "a=mid:1\r\n"
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
        "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n"
        "a=sendonly\r\na=msid:- b\r\na=rtcp-mux\r\na=rtcp-rsize\r\n"
        "a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
        "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n" + video_tail
    )


write("whip_offer", "opus-h264", whip_offer(False).encode())
write("whip_offer", "simulcast", whip_offer(True).encode())


# ICE-TCP: the first byte is the read size; then a framed STUN binding
# request naming a live viewer, and a framed DTLS-looking record.
def stun_binding(username):
    padded = (len(username) + 3) // 4 * 4
    body = struct.pack(">HH", 0x0006, len(username)) + username + b"\0" * (padded - len(username))
    body += bytes([0x00, 0x24, 0x00, 0x04, 0x6E, 0x7F, 0x1E, 0xFF])
    body += bytes([0x00, 0x08, 0x00, 0x14]) + b"\0" * 20
    return struct.pack(">HH", 0x0001, len(body)) + b"\x21\x12\xa4\x42" + b"\x07" * 12 + body


def framed(packet):
    return struct.pack(">H", len(packet)) + packet


stun = stun_binding(b"01abcdef:remote")
write("ice_tcp", "stun-then-dtls", b"\x07" + framed(stun) + framed(b"\x16\xfe\xfd" + b"\0" * 40))
write("ice_tcp", "unknown-ufrag", b"\xff" + framed(stun_binding(b"99zzzzzz:remote")))

for name, req in [
    ("master", "llhls.m3u8"),
    ("media-blocking", "video_0badcafe.m3u8?_HLS_msn=12&_HLS_part=3&_HLS_skip=YES&token=abc"),
    ("init", "audio_0badcafe_init2.mp4"),
    ("segment", "360p_0badcafe_17.m4s"),
    ("part", "video_0badcafe_17_3.m4s?token=x"),
]:
    write("llhls_request", name, req.encode())

for name, body in [
    ("new-stream", {"name": "My show", "description": "line one\nline two", "isPrivate": True}),
    ("token", {"streamId": "abc123", "ttlSeconds": 600}),
]:
    write("api_json", name, json.dumps(body).encode())

for name, body in [
    ("allowed", {"allowed": True, "new_url": "rtmp://host/app2/stream2?x=1", "lifetime": 60000}),
    ("denied", {"allowed": False, "reason": "not on the list"}),
]:
    write("admission_answer", name, json.dumps(body).encode())

# MPEG-TS as SRT carries it: the fixture's TS (first byte: pieces of 8*byte).
TS = os.path.join(HERE, "..", "tests", "fixtures", "clip-160x120-2s.ts")
with open(TS, "rb") as f:
    ts = f.read()
write("mpegts", "start", b"\xa5" + ts[: 188 * 60])
write("mpegts", "keyframe-and-audio", b"\x01" + ts[: 188 * 160])

for name, sid in [
    ("ome-url", "srt://example.com:9999/app/stream?token=abc"),
    ("ome-encoded", "srt%3A%2F%2Fexample.com%3A9999%2Fapp%2Fstream"),
    ("access-control", "#!::r=live/cam,m=publish,u=alice,key=k"),
    ("mediamtx", "publish:live/cam:user:pass:token=t"),
    ("plain", "live/cam?key=k"),
]:
    write("srt_stream_id", name, sid.encode())

write("ice_fragment", "trickle", (
    "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
    "a=mid:0\r\na=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n"
    "a=end-of-candidates\r\n").encode())
write("ice_fragment", "restart", (
    "a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "a=mid:0\r\na=ice-ufrag:ysXw\r\na=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\r\n").encode())
