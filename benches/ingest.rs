//! Ingest throughput: the RTMP chunk stream of a real publish (recorded
//! once, in memory) through `RtmpConnection`, and FLV tags through
//! `TagIngest` onto the bus. Reported in MB/s of input.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use streamd::bus::{Registry, Retention, StreamPath};
use streamd::ingest::rtmp::{RtmpConnection, RtmpEvent};
use streamd::ingest::tags::{Arrival, TagIngest};

#[path = "common/flv.rs"]
mod flv;

use flv::{Tag, read_tags};

fn fixture() -> Vec<Tag> {
    read_tags(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/clip-160x120-2s.flv"
    )))
    .0
}

/// Runs the handshake between a client and `server` in memory; returns the
/// bytes the server sent once it completed (to feed to the client session).
fn handshake(server: &mut RtmpConnection) -> Vec<u8> {
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1().unwrap();
    let s = server.feed(&c0c1).unwrap().send;
    let (c2, rest) = match hs.process_bytes(&s).unwrap() {
        HandshakeProcessResult::Completed {
            response_bytes,
            remaining_bytes,
        } => (response_bytes, remaining_bytes),
        HandshakeProcessResult::InProgress { response_bytes } => (response_bytes, vec![]),
    };
    let mut to_client = rest;
    to_client.extend(server.feed(&c2).unwrap().send);
    to_client
}

fn packets(results: Vec<ClientSessionResult>) -> Vec<u8> {
    results
        .into_iter()
        .filter_map(|r| match r {
            ClientSessionResult::OutboundResponse(p) => Some(p.bytes),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Records what a publishing client sends after the handshake: connect,
/// publish, then `rounds` loops of the fixture's tags.
fn record_publish(rounds: u32) -> Vec<u8> {
    let mut server = RtmpConnection::new();
    let to_client = handshake(&mut server);
    let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut recorded = vec![];
    let exchange = |bytes: Vec<u8>,
                    server: &mut RtmpConnection,
                    client: &mut ClientSession,
                    recorded: &mut Vec<u8>| {
        recorded.extend_from_slice(&bytes);
        let out = server.feed(&bytes).unwrap();
        let mut reply = out.send;
        for e in out.events {
            if let RtmpEvent::PublishRequested { request_id, .. } = e {
                reply.extend(server.accept(request_id).unwrap());
            }
        }
        let results = client.handle_input(&reply).unwrap();
        packets(results)
    };
    let _ = client.handle_input(&to_client).unwrap();
    let connect = packets(vec![client.request_connection("live".into()).unwrap()]);
    let mut pending = exchange(connect, &mut server, &mut client, &mut recorded);
    while !pending.is_empty() {
        pending = exchange(pending, &mut server, &mut client, &mut recorded);
    }
    let publish = packets(vec![
        client
            .request_publishing("bench".into(), PublishRequestType::Live)
            .unwrap(),
    ]);
    let mut pending = exchange(publish, &mut server, &mut client, &mut recorded);
    while !pending.is_empty() {
        pending = exchange(pending, &mut server, &mut client, &mut recorded);
    }
    let tags = fixture();
    for round in 0..rounds {
        for t in &tags {
            let ts = RtmpTimestamp::new(t.ts + round * 2000);
            let r = match t.kind {
                9 => client.publish_video_data(t.body.clone(), ts, false),
                8 => client.publish_audio_data(t.body.clone(), ts, false),
                _ => continue,
            };
            recorded.extend(packets(vec![r.unwrap()]));
        }
    }
    recorded
}

fn rtmp_chunk_stream(c: &mut Criterion) {
    let recorded = record_publish(10);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(recorded.len() as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("rtmp_chunk_stream", |b| {
        b.iter(|| {
            let mut server = RtmpConnection::new();
            handshake(&mut server);
            let mut events = 0;
            for chunk in recorded.chunks(64 * 1024) {
                let out = server.feed(chunk).unwrap();
                for e in out.events {
                    if let RtmpEvent::PublishRequested { request_id, .. } = e {
                        server.accept(request_id).unwrap();
                    }
                    events += 1;
                }
            }
            events
        })
    });
    g.finish();
}

fn flv_tags_to_bus(c: &mut Criterion) {
    let tags = fixture();
    let bytes: usize = tags.iter().map(|t| t.body.len()).sum();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("flv_tags_to_bus", |b| {
        let registry = Registry::new(Duration::ZERO, Retention::default());
        let mut round = 0u32;
        let mut ingest = TagIngest::new(
            registry
                .publish(StreamPath::new("live", "bench").unwrap())
                .unwrap(),
        );
        let at = Arrival::now();
        b.iter(|| {
            for t in &tags {
                let ts = t.ts + round * 2000;
                let _ = match t.kind {
                    9 => ingest.video(t.body.clone(), ts, at).unwrap(),
                    8 => ingest.audio(t.body.clone(), ts, at).unwrap(),
                    _ => None,
                };
            }
            round += 1;
        })
    });
    g.finish();
}

/// A 2-minute 720p 2.5 Mbps FLV for the side-by-side run with ffmpeg
/// (made once, kept in target/).
fn big_flv() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let clip = dir.join("bench-720p-30s.flv");
    let big = dir.join("bench-720p-120s.flv");
    if !big.exists() {
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("ffmpeg")
                .args(args)
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "ffmpeg {args:?}");
        };
        run(&[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=sample_rate=48000",
            "-t",
            "30",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "2500k",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            clip.to_str().unwrap(),
        ]);
        run(&[
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "3",
            "-i",
            clip.to_str().unwrap(),
            "-c",
            "copy",
            big.to_str().unwrap(),
        ]);
    }
    big
}

/// The same 720p file through streamd's tag path and through ffmpeg's FLV
/// demuxer (`-c copy -f null`), in one run. Only under `cargo bench`.
fn flv_side_by_side(c: &mut Criterion) {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let path = big_flv();
    let (tags, file_len) = read_tags(&path);
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Bytes(file_len as u64));
    g.sample_size(20);
    g.bench_function("flv_720p_120s_to_bus", |b| {
        b.iter(|| {
            let registry = Registry::new(Duration::ZERO, Retention::default());
            let mut ingest = TagIngest::new(
                registry
                    .publish(StreamPath::new("live", "bench").unwrap())
                    .unwrap(),
            );
            let at = Arrival::now();
            for t in &tags {
                let _ = match t.kind {
                    9 => ingest.video(t.body.clone(), t.ts, at).unwrap(),
                    8 => ingest.audio(t.body.clone(), t.ts, at).unwrap(),
                    _ => None,
                };
            }
        })
    });
    g.finish();
    // ffmpeg, best of 5 (process start included; a 1-second file gives it).
    let time = |p: &std::path::Path, args: &[&str]| {
        (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                let ok = std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-i", p.to_str().unwrap()])
                    .args(args)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let full = time(&path, &["-c", "copy", "-f", "null", "-"]);
    let start = time(&path, &["-t", "0.04", "-c", "copy", "-f", "null", "-"]);
    let mb = file_len as f64 / (1024.0 * 1024.0);
    println!(
        "baseline ffmpeg -c copy -f null on the same {mb:.1} MiB: {:.1} ms ({:.0} MiB/s), {:.1} ms of it process start ({:.0} MiB/s without)",
        full.as_secs_f64() * 1e3,
        mb / full.as_secs_f64(),
        start.as_secs_f64() * 1e3,
        mb / (full - start.min(full)).as_secs_f64().max(1e-6),
    );
}

criterion_group!(
    benches,
    rtmp_chunk_stream,
    flv_tags_to_bus,
    flv_side_by_side
);
criterion_main!(benches);
