#!/usr/bin/env python3
"""Replays the hardening issue's attacks against a running streamd and
reports what held. Loopback only, bounded in count and time. Floods come
from 100 loopback addresses (127.0.2.x) and the checks from 127.0.0.1: a
flood from one address only ever fills that address's own caps.

    python3 tools/hostile.py [--host 127.0.0.1] [--rtmp 1935] [--http 3333]
                             [--ice-tcp 3478] [--witness live/STREAM]
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
import socket
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--rtmp", type=int, default=1935)
    p.add_argument("--http", type=int, default=3333)
    p.add_argument("--ice-tcp", type=int, default=3478)
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
    for attack in [
        attack_deep_amf,
        attack_oversized_header,
        attack_forged_tokens,
        attack_ice_tcp_garbage,
        attack_offer_flood,
        attack_slowloris,
        attack_idle_sockets,
        attack_never_publish,
    ]:
        if args.only and attack.__name__.removeprefix("attack_") not in args.only:
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
