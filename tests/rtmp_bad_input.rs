//! Hostile and broken RTMP input. Each case must end in a clear log line and
//! a closed connection, while a "witness" stream published alongside keeps
//! being served.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::rtmp::{self, RtmpClient, Tag};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (TestServer, Logs, CaptureGuard, tokio::task::JoinHandle<()>) {
    start_with(|_| {}).await
}

async fn start_with(
    tweak: impl FnOnce(&mut streamd::config::Config),
) -> (TestServer, Logs, CaptureGuard, tokio::task::JoinHandle<()>) {
    let (logs, guard) = Logs::capture();
    let server = TestServer::start(|c| {
        c.rtmp.handshake_timeout = Duration::from_secs(1);
        c.rtmp.idle_timeout = Duration::from_secs(2);
        tweak(c);
    })
    .await;
    let witness = rtmp::spawn_witness(server.rtmp, "live", "witness").await;
    poll(&server.url("/live/witness/llhls.m3u8"), WAIT, |r| {
        r.status == 200
    })
    .await;
    (server, logs, guard, witness)
}

/// The witness stream is still live and advancing.
async fn witness_still_served(server: &TestServer) {
    stream_advances(server, "live", "witness", WAIT).await;
}

/// The server closed `stream` with a log line holding `needles`, and the
/// witness is still served.
async fn closed_cleanly(
    server: &TestServer,
    logs: &Logs,
    stream: &mut TcpStream,
    needles: &[&str],
) -> String {
    assert!(
        rtmp::closed_by_server(stream, WAIT).await,
        "connection left open"
    );
    let mut all = vec!["rtmp connection closed"];
    all.extend_from_slice(needles);
    let line = logs.wait_for(&all, WAIT).await;
    witness_still_served(server).await;
    line
}

/// A raw RTMP message in one chunk with a full (type 0) header.
fn chunk(csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = vec![csid & 0x3f, 0, 0, 0];
    v.extend_from_slice(&len.to_be_bytes()[1..]);
    v.push(type_id);
    v.extend_from_slice(&stream_id.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_on_the_rtmp_port() {
    let (server, logs, _g, _w) = start().await;
    // Not an RTMP version byte.
    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    closed_cleanly(&server, &logs, &mut s, &["RTMP handshake failed"]).await;
    // A valid version byte, then noise.
    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    let mut noise = vec![3u8];
    let mut x = 0x1234_5678u32;
    for _ in 0..8192 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    let _ = s.write_all(&noise).await;
    closed_cleanly(&server, &logs, &mut s, &[]).await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn truncated_handshake() {
    let (server, logs, _g, _w) = start().await;
    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    // C0 and a third of C1, then silence.
    let mut partial = vec![3u8];
    partial.extend_from_slice(&[0u8; 512]);
    s.write_all(&partial).await.unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut s,
        &["handshake not completed within 1s"],
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn huge_chunk_size() {
    let (server, logs, _g, _w) = start().await;
    // Above RTMP's 2^31-1 maximum: refused.
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.send_raw(&chunk(2, 1, 0, &0xffff_ffffu32.to_be_bytes()))
        .await
        .unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["RTMP chunk stream", "set chunk size to 4294967295"],
    )
    .await;

    // The maximum itself is legal: a publisher that uses it is packaged.
    let mut c = RtmpClient::connect_with_chunk_size(server.rtmp, "live", 0x7fff_ffff)
        .await
        .unwrap();
    c.publish("bigchunks").await.unwrap();
    for t in rtmp::fixture() {
        c.send(&t).await.unwrap();
    }
    drop(c);
    server.master_when_ready("live", "bigchunks").await;
    witness_still_served(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_amf() {
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    // An AMF0 command whose first string claims 7 bytes but has 2.
    c.send_raw(&chunk(3, 20, 0, &[0x02, 0x00, 0x07, b'p', b'u']))
        .await
        .unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["malformed AMF0 in a type 20 message", "string cut short"],
    )
    .await;
    server.stop().await;
}

/// The attack the hardening issue opens with: one unauthenticated 35 KB
/// AMF0 command, objects nested 5,000 deep, used to overflow the stack and
/// abort the whole process. Sent before `connect` (right after the
/// handshake) and after it.
#[tokio::test(flavor = "current_thread")]
async fn deeply_nested_amf_closes_only_its_connection() {
    let (server, logs, _g, _w) = start().await;
    let mut payload = vec![0x02, 0, 7];
    payload.extend_from_slice(b"connect");
    payload.push(0x00);
    payload.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..5000 {
        payload.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
    }
    let mut message = chunk(2, 1, 0, &65_536u32.to_be_bytes());
    message.extend_from_slice(&chunk(3, 20, 0, &payload));
    assert!(message.len() > 20_000);

    let mut s = TcpStream::connect(server.rtmp).await.unwrap();
    rtmp::handshake(&mut s).await.unwrap();
    s.write_all(&message).await.unwrap();
    closed_cleanly(&server, &logs, &mut s, &["nest deeper than 16 levels"]).await;

    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.send_raw(&message).await.unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["nest deeper than 16 levels"],
    )
    .await;
    server.stop().await;
}

/// A command header that claims a megabyte is refused at the header, before
/// its body arrives; a video header that claims more than the media limit
/// likewise.
#[tokio::test(flavor = "current_thread")]
async fn oversized_messages_are_refused_at_their_header() {
    let (server, logs, _g, _w) = start().await;
    for (type_id, len, needle) in [
        (
            20u8,
            1u32 << 20,
            "message type 20 of 1048576 bytes is over the 65536-byte limit",
        ),
        (
            9,
            0xff_ffff,
            "message type 9 of 16777215 bytes is over the 8388608-byte limit",
        ),
    ] {
        let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
        let mut header = vec![4u8, 0, 0, 0];
        header.extend_from_slice(&len.to_be_bytes()[1..]);
        header.push(type_id);
        header.extend_from_slice(&1u32.to_le_bytes());
        c.send_raw(&header).await.unwrap();
        closed_cleanly(&server, &logs, &mut c.stream, &[needle]).await;
    }
    server.stop().await;
}

/// A connection that never asks to publish is closed at the publish
/// deadline, even while it keeps sending (pings).
#[tokio::test(flavor = "current_thread")]
async fn connection_that_never_publishes_is_closed() {
    let (server, logs, _g, _w) = start_with(|c| {
        c.rtmp.publish_timeout = Duration::from_secs(2);
    })
    .await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    let keep_busy = async {
        let mut ping = vec![0u8, 6];
        ping.extend_from_slice(&[0, 0, 0, 1]);
        loop {
            if c.send_raw(&chunk(2, 4, 0, &ping)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    tokio::time::timeout(WAIT, keep_busy).await.unwrap();
    logs.wait_for(
        &["rtmp connection closed", "no publish request within 2s"],
        WAIT,
    )
    .await;
    witness_still_served(&server).await;
    server.stop().await;
}

/// One address may hold `max_connections_per_ip` connections; more are
/// closed at accept and counted, and the witness (the same address) keeps
/// publishing.
#[tokio::test(flavor = "current_thread")]
async fn connections_per_address_are_capped() {
    let (server, logs, _g, _w) = start_with(|c| {
        c.rtmp.max_connections_per_ip = 4;
    })
    .await;
    // The witness holds one; three more fit.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(RtmpClient::connect(server.rtmp, "live").await.unwrap());
    }
    let mut extra = TcpStream::connect(server.rtmp).await.unwrap();
    assert!(rtmp::closed_by_server(&mut extra, WAIT).await);
    logs.wait_for(
        &[
            "rtmp connection refused",
            "too many connections from this address (4 open)",
        ],
        WAIT,
    )
    .await;
    witness_still_served(&server).await;
    // Freed slots are usable again.
    drop(held.pop());
    let c = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(c) = RtmpClient::connect(server.rtmp, "live").await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn interleaved_chunks_and_interrupted_messages() {
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    // The test client negotiated 4096-byte chunks: a 5000-byte message
    // spans two. Another chunk stream's message between them is legal
    // interleaving (rml_rtmp's parser used to panic on its unchecked
    // arithmetic here): the connection stays open.
    let mut first = chunk(4, 9, 1, &[0u8; 5000]);
    let rest = first.split_off(12 + 4096);
    c.send_raw(&first).await.unwrap();
    c.send_raw(&chunk(5, 9, 1, &[0u8; 10])).await.unwrap();
    let mut continuation = vec![0xc0 | 4];
    continuation.extend_from_slice(&rest);
    c.send_raw(&continuation).await.unwrap();
    assert!(
        !c.closed_by_server(Duration::from_secs(1)).await,
        "interleaving closed the connection"
    );
    // A full header on the same chunk stream in the middle of a message is
    // not: the message would be lost.
    c.send_raw(&first).await.unwrap();
    c.send_raw(&chunk(4, 9, 1, &[0u8; 10])).await.unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["a new message header (type 0) on chunk stream 4 interrupts a message with 904 bytes missing"],
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn avc_sequence_header_that_lies_about_its_lengths() {
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.publish("liar").await.unwrap();
    let header = rtmp::fixture()
        .into_iter()
        .find(|t| t.kind == 9 && rtmp::is_sequence_header(t))
        .unwrap();
    let mut body = header.body.to_vec();
    body[5 + 7] = 0xff; // the SPS claims 255 bytes
    c.send(&Tag {
        kind: 9,
        timestamp: 0,
        body: Bytes::from(body),
    })
    .await
    .unwrap();
    let line = closed_cleanly(&server, &logs, &mut c.stream, &["bad AVC sequence header"]).await;
    assert!(line.contains("SPS #0 claims 255 bytes"), "{line}");
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn stream_that_starts_without_a_keyframe() {
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.publish("nokey").await.unwrap();
    let tags = rtmp::fixture();
    let keys: Vec<usize> = tags
        .iter()
        .enumerate()
        .filter(|(_, t)| rtmp::is_keyframe(t))
        .map(|(i, _)| i)
        .collect();
    assert!(keys.len() >= 2);
    // Sequence headers, then the middle of the first GOP (inter frames and
    // audio), then the stream from the second keyframe on, twice over.
    for t in tags.iter().filter(|t| rtmp::is_sequence_header(t)) {
        c.send(t).await.unwrap();
    }
    for t in &tags[keys[0] + 1..keys[1]] {
        c.send(t).await.unwrap();
    }
    // In real time from the second keyframe (1 s into the clip) on.
    let start = tokio::time::Instant::now();
    let rest = tags[keys[1]..].iter().map(|t| (0, t));
    let again = (1..3u32).flat_map(|round| tags.iter().map(move |t| (round, t)));
    for (round, t) in rest.chain(again) {
        if rtmp::is_sequence_header(t) || (t.kind == 8 && t.timestamp + 24 > 2000) {
            continue;
        }
        let mut t = t.clone();
        t.timestamp += round * 2000;
        let due = u64::from(t.timestamp).saturating_sub(1000);
        tokio::time::sleep_until(start + Duration::from_millis(due)).await;
        c.send(&t).await.unwrap();
    }
    logs.wait_for(&["does not start with a keyframe", "live/nokey"], WAIT)
        .await;
    logs.wait_for(&["keyframe arrived; video starts here", "live/nokey"], WAIT)
        .await;
    let master = poll(&server.url("/live/nokey/llhls.m3u8"), WAIT, |r| {
        r.status == 200
    })
    .await;
    let video = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .unwrap();
    let playlist = get(&server.url(&format!("/live/nokey/{video}")))
        .await
        .text();
    // The first part listed starts with the keyframe.
    let first_part = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PART:"))
        .unwrap();
    assert!(first_part.contains("INDEPENDENT=YES"), "{playlist}");
    witness_still_served(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn invalid_stream_names_are_refused() {
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    match c.publish("../../etc/passwd").await {
        Err(rtmp::PublishError::Refused(code)) => assert_eq!(code, "NetStream.Publish.BadName"),
        other => panic!("not refused with a status: {other:?}"),
    }
    logs.wait_for(&["publish refused", "invalid stream name"], WAIT)
        .await;
    witness_still_served(&server).await;
    server.stop().await;
}

/// At `bus.max_broadcasts`, a new publish gets a clear refusal (its RTMP
/// status and a log line saying why) and the live streams go on.
#[tokio::test(flavor = "current_thread")]
async fn a_full_server_refuses_new_publishers_clearly() {
    let (server, logs, _g, _w) = start_with(|c| c.bus.max_broadcasts = 1).await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    match c.publish("one-too-many").await {
        Err(rtmp::PublishError::Refused(code)) => assert_eq!(code, "NetStream.Publish.Failed"),
        other => panic!("not refused with a status: {other:?}"),
    }
    logs.wait_for(
        &[
            "rtmp connection closed",
            "the server is full: 1 broadcasts live",
        ],
        WAIT,
    )
    .await;
    witness_still_served(&server).await;
    server.stop().await;
}
