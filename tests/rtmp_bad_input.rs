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
    let (logs, guard) = Logs::capture();
    let server = TestServer::start(|c| {
        c.rtmp.handshake_timeout = Duration::from_secs(1);
        c.rtmp.idle_timeout = Duration::from_secs(2);
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
    let master = get(&server.url("/live/witness/llhls.m3u8")).await;
    assert_eq!(master.status, 200);
    let video = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .unwrap();
    let url = server.url(&format!("/live/witness/{video}"));
    let before = get(&url).await.text();
    let last_part = |t: &str| {
        t.lines()
            .rfind(|l| l.starts_with("#EXT-X-PART:"))
            .map(str::to_owned)
    };
    let was = last_part(&before);
    poll(&url, WAIT, |r| {
        r.status == 200 && last_part(&r.text()) != was
    })
    .await;
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
        &["RTMP protocol error", "not encoded in an expected format"],
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
    // An AMF0 command whose first string claims 7 bytes but has 2. The AMF
    // decoder (rml_amf0) panics on it; streamd turns that into an error for
    // this connection.
    c.send_raw(&chunk(3, 20, 0, &[0x02, 0x00, 0x07, b'p', b'u']))
        .await
        .unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["RTMP parser failed on malformed input"],
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn interleaved_chunks_that_break_the_chunk_parser() {
    // rml_rtmp computes `message_length - bytes_received` unchecked when a
    // new message header arrives mid-message; streamd turns its panic into
    // an error for this connection only.
    let (server, logs, _g, _w) = start().await;
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    // The test client negotiated 4096-byte chunks: a 5000-byte message
    // spans two, and only the first is sent before another message starts.
    let mut first = chunk(4, 9, 1, &[0u8; 5000]);
    first.truncate(12 + 4096);
    c.send_raw(&first).await.unwrap();
    c.send_raw(&chunk(5, 9, 1, &[0u8; 10])).await.unwrap();
    closed_cleanly(
        &server,
        &logs,
        &mut c.stream,
        &["RTMP parser failed on malformed input"],
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
    assert!(c.publish("../../etc/passwd").await.is_err());
    logs.wait_for(&["publish refused", "invalid stream name"], WAIT)
        .await;
    witness_still_served(&server).await;
    server.stop().await;
}
