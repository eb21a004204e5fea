//! Recording end to end: a real ffmpeg publisher, the recording on local
//! disk and on a real S3 endpoint (moto's server, from tests/python's
//! venv), a store outage, `kill -9` and recovery; the VOD checked by
//! ffprobe and ffmpeg, which decode it start to end.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, get, request};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_streamd");
const FPS: f64 = 30.0;

/// Published: 30 fps, so one frame is this long.
const FRAME: f64 = 1.0 / FPS;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// moto's S3 server on a free port, with bucket `bucket`. A missing moto
/// fails the test (scripts/test.sh installs it).
struct Moto {
    _child: Child,
    addr: SocketAddr,
}

async fn moto(bucket: &str) -> Moto {
    let bin = common::browser_dir()
        .parent()
        .unwrap()
        .join("python/.venv/bin/moto_server");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test.sh (it installs tests/python/requirements.txt)",
        bin.display()
    );
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "moto_server did not listen on {addr} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let made = request("PUT", &format!("http://{addr}/{bucket}"), &[]).await;
    assert_eq!(made.status, 200, "create bucket: {}", made.text());
    Moto {
        _child: child,
        addr,
    }
}

/// A TCP proxy in front of a store that can go down: closed, it cuts the
/// connections it carries and answers every new one with a 503.
struct Gate {
    addr: SocketAddr,
    open: watch::Sender<bool>,
}

async fn gate(target: SocketAddr) -> Gate {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (open, rx) = watch::channel(true);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut rx = rx.clone();
            tokio::spawn(async move {
                if !*rx.borrow() {
                    let _ = client
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    _ = rx.wait_for(|open| !open) => {}
                }
            });
        }
    });
    Gate { addr, open }
}

fn bearer(server: &TestServer) -> String {
    format!(
        "Bearer {}",
        server
            .access
            .auth
            .mint_api("tester", Duration::from_secs(600))
    )
}

async fn api(server: &TestServer, method: &str, path: &str) -> common::Response {
    let auth = bearer(server);
    request(method, &server.url(path), &[("authorization", &auth)]).await
}

/// The stream's recordings, newest first.
async fn recordings(server: &TestServer, app: &str, stream: &str) -> Vec<Value> {
    let r = api(
        server,
        "GET",
        &format!("/api/recordings?stream={app}/{stream}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_str::<Value>(&r.text())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the stream's only recording has `status`.
async fn wait_status(
    server: &TestServer,
    app: &str,
    stream: &str,
    status: &str,
    timeout: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = recordings(server, app, stream).await;
        assert!(all.len() <= 1, "one live session, one recording: {all:?}");
        if let Some(r) = all.first()
            && r["status"] == status
        {
            return r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {status} recording of {app}/{stream} in {timeout:?}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The presentation times of every packet of one stream (`v:0`, `a:0`).
async fn packet_times(url: &str, stream: &str) -> Vec<f64> {
    let (ok, out, err) = common::run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            stream,
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
            url,
        ],
    )
    .await;
    assert!(ok && err.trim().is_empty(), "ffprobe {url}: {err}");
    let mut t: Vec<f64> = out
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// Gaps between consecutive packets longer than `max` seconds: (where,
/// how long).
fn gaps(times: &[f64], max: f64) -> Vec<(f64, f64)> {
    times
        .windows(2)
        .filter(|w| w[1] - w[0] > max)
        .map(|w| (w[0], w[1] - w[0]))
        .collect()
}

/// ffmpeg decodes the whole VOD, video and audio, without one error.
async fn decodes_cleanly(url: &str) {
    let (ok, _, err) = common::run(
        "ffmpeg",
        &[
            "-v", "error", "-nostdin", "-i", url, "-map", "0", "-f", "null", "-",
        ],
    )
    .await;
    assert!(ok && err.trim().is_empty(), "ffmpeg decoding {url}: {err}");
}

/// Publish 30 s, stop: the recording is `ready`, as long as the publish
/// (within one part), and decodes start to end with no gap in video or
/// audio; its segments are in the store (local disk, the default), the
/// spool is empty, and the API and the playlists say the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_recorded_to_disk_and_played_back_as_vod() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let publisher = server.publish("live", "rec1", 30, "640x360");
    let live = wait_status(
        &server,
        "live",
        "rec1",
        "recording",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(live["app"], "live");
    let id = live["id"].as_str().unwrap().to_owned();
    // While live: an EVENT playlist, no end.
    let master_url = server.url(&format!("/vod/{id}/master.m3u8"));
    let during = get(&server.url(&format!("/vod/{id}/video.m3u8"))).await;
    assert_eq!(during.status, 200);
    assert!(
        during.text().contains("#EXT-X-PLAYLIST-TYPE:EVENT"),
        "{}",
        during.text()
    );
    assert!(!during.text().contains("#EXT-X-ENDLIST"));

    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "rec1", "ready", Duration::from_secs(30)).await;
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (duration - 30.0).abs() <= 0.2 + FRAME,
        "recorded {duration} s of a 30 s publish"
    );
    assert!(r["bytes"].as_u64().unwrap() > 500_000, "{r}");
    assert_eq!(r["playbackUrl"], format!("/vod/{id}/master.m3u8"));
    let shown = api(&server, "GET", &format!("/api/recordings/{id}")).await;
    assert_eq!(serde_json::from_str::<Value>(&shown.text()).unwrap(), r);

    let media = get(&server.url(&format!("/vod/{id}/video.m3u8"))).await;
    let text = media.text();
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:VOD") && text.ends_with("#EXT-X-ENDLIST\n"),
        "{text}"
    );
    assert!(!text.contains("DISCONTINUITY"), "{text}");
    // Six-second archive segments (the default target).
    let segments = text.matches("#EXTINF").count();
    assert!((5..=6).contains(&segments), "{segments} segments: {text}");

    let video = packet_times(&master_url, "v:0").await;
    let audio = packet_times(&master_url, "a:0").await;
    assert!(
        video.len() as f64 >= 30.0 * FPS - 1.0,
        "{} video frames of 900",
        video.len()
    );
    // AAC at 44.1 kHz: 1024 samples a packet.
    assert!(
        audio.len() as f64 >= 30.0 * 44_100.0 / 1024.0 - 2.0,
        "{} audio packets",
        audio.len()
    );
    assert_eq!(gaps(&video, 1.5 * FRAME), [], "gaps in the video");
    assert_eq!(gaps(&audio, 0.05), [], "gaps in the audio");
    let span = video.last().unwrap() - video.first().unwrap() + FRAME;
    assert!(
        (span - duration).abs() <= 0.2,
        "video spans {span} s, the recording says {duration} s"
    );
    decodes_cleanly(&master_url).await;

    // A byte range of a segment, and caching headers for a closed one.
    let seg = server.url(&format!("/vod/{id}/video/1.m4s"));
    let whole = get(&seg).await;
    assert_eq!(whole.status, 200);
    assert!(whole.header("cache-control").unwrap().contains("immutable"));
    let part = request("GET", &seg, &[("range", "bytes=8-15")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body.slice(8..16));
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 8-15/{}", whole.body.len()).as_str())
    );
    server.stop().await;
}
