//! Recording end to end: a real ffmpeg publisher, the recording on local
//! disk and on a real S3 endpoint (moto's server, from tests/python's
//! venv), a store outage, `kill -9` and recovery; the VOD checked by
//! ffprobe and ffmpeg, which decode it start to end.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::gate::{Mode, gate};
use common::{TestServer, free_port, get, request};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_streamd");
const FPS: f64 = 30.0;

/// Published: 30 fps, so one frame is this long.
const FRAME: f64 = 1.0 / FPS;

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

/// A recorder metric of node `node` (metrics are process-wide, and tests
/// run side by side: each that reads one gives its server a node name).
fn rec_metric(name: &str, node: &str) -> String {
    format!("{name}{{node=\"{node}\"}}")
}

/// Records to `location` on the S3 server at `endpoint` (moto, through a
/// gate or not), with moto's test credentials.
fn record_to_s3(c: &mut streamd::config::Config, location: &str, endpoint: &str) {
    c.record.location = location.into();
    c.record.s3_endpoint = endpoint.into();
    c.record.s3_access_key_id = "testing".into();
    c.record.s3_secret_access_key = "testing".into();
    c.record.s3_region = "us-east-1".into();
}

/// A config file for streamd run as its own process on fixed loopback
/// ports (no WebRTC, no transcoding, open publishing, a 1 s grace), its
/// data in `dir`, with `record` appended to its `[record]` table.
fn binary_config(
    dir: &std::path::Path,
    rtmp: &str,
    http: &str,
    record: &str,
) -> std::path::PathBuf {
    let config = dir.join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            "[rtmp]\nlisten = \"{rtmp}\"\n[http]\nlisten = \"{http}\"\n[srt]\nenabled = false\n\
             [webrtc]\nenabled = false\n[whip]\nenabled = false\n[transcode]\nenabled = false\n\
             [auth]\npublish = \"open\"\njwt_secret = \"{}\"\n\
             [bus]\nreconnect_grace = \"1s\"\n\
             [database]\ndata_dir = \"{}\"\n\
             [record]\n{record}",
            common::TEST_SECRET,
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
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
/// `-copyts`: each stream's own times, which must run forward. Without it
/// the CLI closes a discontinuity over 10 s by the first stream's jump and
/// shifts the other by that, which (audio and video cut a frame apart)
/// can move the other back a few ms, an error of the check, not the VOD.
async fn decodes_cleanly(url: &str) {
    let (ok, _, err) = common::run(
        "ffmpeg",
        &[
            "-v", "error", "-nostdin", "-copyts", "-i", url, "-map", "0", "-f", "null", "-",
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
    // Not downloadable while live.
    assert_eq!(
        get(&server.url(&format!("/vod/{id}/recording.mp4")))
            .await
            .status,
        409
    );
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

    // One MP4 file: both tracks, every frame, no gap, decodable.
    let mp4_url = server.url(&format!("/vod/{id}/recording.mp4"));
    let mp4 = get(&mp4_url).await;
    assert_eq!(mp4.status, 200);
    assert_eq!(
        mp4.header("content-length"),
        Some(mp4.body.len().to_string().as_str())
    );
    assert_eq!(
        mp4.header("content-disposition"),
        Some(format!("attachment; filename=\"live-rec1-{id}.mp4\"").as_str())
    );
    let mp4_video = packet_times(&mp4_url, "v:0").await;
    assert_eq!(mp4_video.len(), video.len());
    assert_eq!(gaps(&mp4_video, 1.5 * FRAME), [], "gaps in the MP4's video");
    assert_eq!(packet_times(&mp4_url, "a:0").await.len(), audio.len());
    decodes_cleanly(&mp4_url).await;

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

/// The objects under `prefix` in moto's bucket.
async fn s3_keys(moto: &Moto, bucket: &str, prefix: &str) -> Vec<String> {
    let r = get(&format!(
        "http://{}/{bucket}?list-type=2&max-keys=1000&prefix={prefix}",
        moto.addr
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
        .split("<Key>")
        .skip(1)
        .filter_map(|k| k.split("</Key>").next().map(str::to_owned))
        .collect()
}

/// Recording to a real S3 endpoint (moto) through a gate that goes down
/// for 60 s mid-recording: the spool holds everything meanwhile (the
/// backlog and retries show it), nothing is lost, and once the store is
/// back the backlog drains, the recording is `ready` and its every
/// segment is in the bucket and plays without a gap.
/// An Enhanced RTMP HEVC publisher without a ladder is recorded as it
/// came: the VOD's master names `hvc1`, ffmpeg decodes it through, and
/// the MP4 download carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hevc_stream_is_recorded_as_it_came() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let url = server.rtmp_url("live", "hevcrec");
    let publisher = common::ffmpeg9_publish(&url, "flv", 10, "320x240", common::X265_FAST);
    wait_status(
        &server,
        "live",
        "hevcrec",
        "recording",
        Duration::from_secs(20),
    )
    .await;
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "hevcrec", "ready", Duration::from_secs(30)).await;
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (duration - 10.0).abs() <= 0.2 + FRAME,
        "recorded {duration} s"
    );
    let id = r["id"].as_str().unwrap();
    let master_url = server.url(&format!("/vod/{id}/master.m3u8"));
    let master = get(&master_url).await.text();
    assert!(master.contains("CODECS=\"hvc1.1.6.L"), "{master}");
    decodes_cleanly(&master_url).await;
    // And as one MP4 file.
    let mp4 = server.url(&format!("/vod/{id}/recording.mp4"));
    let (codec, w, h, frames) = common::probe_video(&mp4).await;
    assert_eq!((codec.as_str(), w, h), ("hevc", 320, 240));
    assert!(frames >= 30, "{frames} frames in the MP4");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_loses_nothing_and_the_backlog_drains() {
    let moto = moto("rec-test").await;
    let gate = gate(moto.addr).await;
    let endpoint = format!("http://{}", gate.addr);
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.record.node = "outage".into();
        record_to_s3(c, "s3://rec-test/archive", &endpoint);
        c.record.segment_target = Duration::from_secs(2);
    })
    .await;
    let publisher = server.publish("live", "s3cam", 30, "640x360");
    let live = wait_status(
        &server,
        "live",
        "s3cam",
        "recording",
        Duration::from_secs(20),
    )
    .await;
    let id = live["id"].as_str().unwrap().to_owned();
    assert_eq!(live["location"], "s3://rec-test/archive");
    // Some segments go up before the outage.
    let prefix = format!("archive/live/s3cam/{id}/");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while s3_keys(&moto, "rec-test", &prefix).await.len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "nothing uploaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Down for a minute: half of it answering garbage, half refusing.
    gate.mode.send_replace(Mode::Garbage);
    let down = tokio::time::Instant::now();
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(
        &server,
        "live",
        "s3cam",
        "uploading",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(r["id"], id.as_str());
    tokio::time::sleep_until(down + Duration::from_secs(30)).await;
    let garbage_failures = server
        .metric(&rec_metric(
            "streamd_record_upload_failures_total",
            "outage",
        ))
        .await;
    assert!(garbage_failures >= 1.0, "garbage answers are failures");
    gate.mode.send_replace(Mode::Refuse);
    tokio::time::sleep_until(down + Duration::from_secs(60)).await;
    // Down for a minute: still waiting, everything held in the spool.
    assert_eq!(
        recordings(&server, "live", "s3cam").await[0]["status"],
        "uploading"
    );
    let backlog = server
        .metric(&rec_metric("streamd_record_upload_backlog", "outage"))
        .await;
    assert!(backlog >= 10.0, "backlog {backlog}");
    let spooled = server
        .metric(&rec_metric("streamd_record_spool_bytes", "outage"))
        .await;
    assert!(spooled > 100_000.0, "spool holds {spooled} bytes");
    assert!(
        server
            .metric(&rec_metric("streamd_record_upload_retries_total", "outage"))
            .await
            >= 2.0
    );
    assert!(
        server
            .metric(&rec_metric(
                "streamd_record_upload_failures_total",
                "outage"
            ))
            .await
            > garbage_failures
    );

    gate.mode.send_replace(Mode::Open);
    let r = wait_status(&server, "live", "s3cam", "ready", Duration::from_secs(60)).await;
    assert_eq!(
        server
            .metric(&rec_metric("streamd_record_upload_backlog", "outage"))
            .await,
        0.0
    );
    assert_eq!(
        server
            .metric(&rec_metric("streamd_record_spool_bytes", "outage"))
            .await,
        0.0
    );
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (duration - 30.0).abs() <= 0.2 + FRAME,
        "recorded {duration} s of a 30 s publish"
    );

    // Every segment the playlists list is in the bucket.
    let master_url = server.url(&format!("/vod/{id}/master.m3u8"));
    let mut listed = Vec::new();
    for rendition in ["video", "audio"] {
        let text = get(&server.url(&format!("/vod/{id}/{rendition}.m3u8")))
            .await
            .text();
        assert!(!text.contains("DISCONTINUITY"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            listed.push(format!("{prefix}{line}"));
        }
        listed.push(format!("{prefix}{rendition}/init_0.mp4"));
    }
    let mut keys = s3_keys(&moto, "rec-test", &prefix).await;
    keys.sort();
    listed.sort();
    assert_eq!(keys, listed);
    assert!(listed.len() >= 30, "{listed:?}");

    let video = packet_times(&master_url, "v:0").await;
    assert!(
        video.len() as f64 >= 30.0 * FPS - 1.0,
        "{} video frames",
        video.len()
    );
    assert_eq!(gaps(&video, 1.5 * FRAME), [], "gaps in the video");
    assert_eq!(
        gaps(&packet_times(&master_url, "a:0").await, 0.05),
        [],
        "gaps in the audio"
    );
    decodes_cleanly(&master_url).await;

    // Deleted: the objects go too, and the VOD with them.
    assert_eq!(
        api(&server, "DELETE", &format!("/api/recordings/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(
        s3_keys(&moto, "rec-test", &prefix).await,
        Vec::<String>::new()
    );
    assert_eq!(get(&master_url).await.status, 404);
    assert_eq!(
        api(&server, "DELETE", &format!("/api/recordings/{id}"))
            .await
            .status,
        404
    );
    server.stop().await;
}

/// streamd as its own process on fixed ports, its log lines to `log`.
fn streamd(config: &std::path::Path, log: &std::path::Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("streamd runs")
}

async fn healthy(http: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(http).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streamd did not listen on {http}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&format!("http://{http}/healthz")).await.status, 200);
}

/// `kill -9` mid-recording, then a restart on the same data: the open
/// segment is cut at its last whole fragment and kept, every segment is
/// uploaded, the recording becomes `ready`, and the VOD decodes with no
/// gap (it ends at the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_recording_keeps_every_whole_fragment() {
    let dir = tempfile::tempdir().unwrap();
    let (rtmp, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = binary_config(dir.path(), &rtmp, &http, "segment_target = \"2s\"\n");
    let auth = streamd::auth::Auth::new(common::TEST_SECRET, Default::default());
    let bearer = format!(
        "Bearer {}",
        auth.mint_api("tester", Duration::from_secs(600))
    );
    let list = || {
        let (url, bearer) = (
            format!("http://{http}/api/recordings?stream=live/crash"),
            bearer.clone(),
        );
        async move {
            let r = request("GET", &url, &[("authorization", &bearer)]).await;
            serde_json::from_str::<Value>(&r.text())
                .unwrap()
                .as_array()
                .unwrap()
                .clone()
        }
    };

    let log1 = dir.path().join("first.log");
    let mut first = streamd(&config, &log1);
    healthy(&http).await;
    let publisher = common::Publish {
        url: &format!("rtmp://{rtmp}/live/crash"),
        seconds: 20,
        size: "640x360",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while list().await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recording_since = tokio::time::Instant::now();
    // Mid-segment: 2 s segments, killed 1 s into one (the packager's
    // first segment started about when the recording did).
    tokio::time::sleep(Duration::from_millis(9_000)).await;
    // Killed while the newest video segment holds whole fragments and is
    // still open (the journal says so).
    let id = list().await[0]["id"].as_str().unwrap().to_owned();
    let spool = dir.path().join("data/spool").join(&id).join("video");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let newest = std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".m4s")?.parse::<u32>().ok()
            })
            .max();
        if let Some(n) = newest {
            let data = std::fs::read(spool.join(format!("{n}.m4s"))).unwrap_or_default();
            if streamd::record::spool::complete_prefix(&data) > 0 {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no open segment with a whole fragment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let recorded_for = recording_since.elapsed().as_secs_f64();
    drop(publisher);

    let log2 = dir.path().join("second.log");
    let mut second = streamd(&config, &log2);
    healthy(&http).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let r = loop {
        let all = list().await;
        assert_eq!(all.len(), 1, "{all:?}");
        if all[0]["status"] == "ready" {
            break all[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after the restart: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let log = std::fs::read_to_string(&log2).unwrap();
    let recovered = log
        .lines()
        .find(|l| l.contains("recovered the recording spool"))
        .unwrap_or_else(|| panic!("no recovery logged:\n{log}"));
    assert!(recovered.contains("recordings=1"), "{recovered}");
    let repaired: u32 = recovered
        .split_whitespace()
        .find_map(|w| w.strip_prefix("repaired=")?.parse().ok())
        .unwrap_or(0);
    assert!(
        repaired >= 1,
        "the open segments were repaired: {recovered}"
    );

    assert_eq!(r["id"], id.as_str());
    let master_url = format!("http://{http}/vod/{id}/master.m3u8");
    let video = packet_times(&master_url, "v:0").await;
    assert_eq!(gaps(&video, 1.5 * FRAME), [], "gaps in the video");
    let span = video.last().unwrap() - video.first().unwrap();
    // Everything but the last part or so before the kill (and the live
    // edge the packager had not cut yet).
    assert!(
        span >= recorded_for - 2.0,
        "{span} s recovered of about {recorded_for} s recorded"
    );
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (span + FRAME - duration).abs() <= 0.2,
        "{span} s of video, {duration} s journalled"
    );
    decodes_cleanly(&master_url).await;
    second.start_kill().unwrap();
}

/// The spool's budget reached while the store is down: segments past it
/// are not recorded (counted, logged), live LL-HLS carries on untouched,
/// and once the store is back and the spool drains, recording resumes
/// after an `EXT-X-DISCONTINUITY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_skips_segments_and_live_carries_on() {
    let moto = moto("rec-full").await;
    let gate = gate(moto.addr).await;
    gate.mode.send_replace(Mode::Refuse);
    let endpoint = format!("http://{}", gate.addr);
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.record.node = "full-spool".into();
        record_to_s3(c, "s3://rec-full", &endpoint);
        c.record.segment_target = Duration::from_secs(1);
        c.record.spool_budget = 1 << 20;
    })
    .await;
    let publisher = server.publish("live", "full", 40, "640x360");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while server
        .metric(&rec_metric("streamd_record_spool_full_total", "full-spool"))
        .await
        < 2.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never filled"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let spooled = server
        .metric(&rec_metric("streamd_record_spool_bytes", "full-spool"))
        .await;
    // At most one segment per rendition past the budget (the check is
    // made as a segment opens).
    assert!(
        spooled < 1.5 * (1 << 20) as f64,
        "spool {spooled} bytes over a 1 MiB budget"
    );
    // Live playback is not affected.
    common::stream_advances(&server, "live", "full", Duration::from_secs(10)).await;
    // The store stays down until four moments (video and audio each) were
    // skipped, so the hole is there whenever the uploader's retry lands.
    while server
        .metric(&rec_metric("streamd_record_spool_full_total", "full-spool"))
        .await
        < 8.0
    {
        assert!(
            tokio::time::Instant::now() < deadline + Duration::from_secs(10),
            "the spool did not stay full while the store was down"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gate.mode.send_replace(Mode::Open);
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "full", "ready", Duration::from_secs(60)).await;
    let id = r["id"].as_str().unwrap();
    let text = get(&server.url(&format!("/vod/{id}/video.m3u8")))
        .await
        .text();
    assert!(text.contains("#EXT-X-DISCONTINUITY"), "{text}");
    // Recorded before the budget and after the drain, not between: at
    // least four of the 40 published seconds are missing.
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!((2.0..38.0).contains(&duration), "{duration} s recorded");
    // The same moments are missing from video and audio: a player that
    // closes the hole keeps them in sync.
    let audio = get(&server.url(&format!("/vod/{id}/audio.m3u8")))
        .await
        .text();
    let recorded = |playlist: &str, rendition: &str| -> Vec<u64> {
        playlist
            .lines()
            .filter_map(|l| {
                l.strip_prefix(&format!("{rendition}/"))?
                    .strip_suffix(".m4s")
            })
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let video_segments = recorded(&text, "video");
    assert!(
        video_segments.windows(2).any(|w| w[1] > w[0] + 1),
        "no segment was skipped: {video_segments:?}"
    );
    assert_eq!(video_segments, recorded(&audio, "audio"), "{text}\n{audio}");
    decodes_cleanly(&server.url(&format!("/vod/{id}/master.m3u8"))).await;
    server.stop().await;
}

/// Hostile recording ids and file names in every route: each is refused
/// (404, or 400 for a bad query) without touching the disk or the store,
/// and a real recording is still served after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_recording_ids_and_names_are_refused() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let publisher = server.publish("live", "witness", 4, "320x240");
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "witness", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    for path in [
        "/vod/rec_%2e%2e%2f%2e%2e%2fetc/master.m3u8".to_owned(),
        "/vod/..%2f..%2fetc%2fpasswd/master.m3u8".into(),
        "/vod/rec_aaaaaaaaaaaaaaaa/master.m3u8".into(),
        format!("/vod/{id}/..%2f..%2fstreamd.db"),
        format!("/vod/{id}/%2e%2e.m3u8"),
        format!("/vod/{id}/..%2f..%2f..%2fetc%2fpasswd/0.m4s"),
        format!("/vod/{id}/video/..%2f..%2fstreamd.db"),
        format!("/vod/{id}/video/-1.m4s"),
        format!("/vod/{id}/video/99999999999999999999.m4s"),
        format!("/vod/{id}/video/init_x.mp4"),
        format!("/vod/{id}/video/0.m4s%00.txt"),
    ] {
        let resp = get(&server.url(&path)).await;
        assert_eq!(resp.status, 404, "{path}: {}", resp.text());
    }
    for (path, want) in [
        (
            "/api/recordings/rec_'%3B%20DROP%20TABLE%20recordings%3B--",
            404,
        ),
        ("/api/recordings/..%2f..%2fetc", 404),
        ("/api/recordings?stream=..%2F..", 400),
        ("/api/recordings?stream=live", 400),
        ("/api/recordings", 400),
    ] {
        let resp = api(&server, "GET", path).await;
        assert_eq!(resp.status, want, "{path}: {}", resp.text());
    }
    let resp = api(&server, "DELETE", "/api/recordings/rec_..%2f..%2f..%2fx").await;
    assert_eq!(resp.status, 404);
    // Without a token: 401 before anything is looked up.
    assert_eq!(
        get(&server.url(&format!("/api/recordings/{id}")))
            .await
            .status,
        401
    );
    // The witness still plays.
    decodes_cleanly(&server.url(&format!("/vod/{id}/master.m3u8"))).await;
    server.stop().await;
}

/// A `gs://` location through object_store's GCS client, against a FAKE
/// of the GCS XML API (tests/common/gcs_fake.rs says why a fake): the key
/// file from `record.gcs_credentials`, the objects under the prefix, the
/// VOD served back from it, and DELETE emptying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcs_location_records_through_the_gcs_client() {
    let keys = tempfile::tempdir().unwrap();
    let (fake, addr, key_file) = common::gcs_fake::FakeGcs::start(keys.path()).await;
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.record.location = "gs://streamd-vod/site-a".into();
        c.record.gcs_credentials = key_file;
        c.record.segment_target = Duration::from_secs(2);
    })
    .await;
    let publisher = server.publish("live", "gcs", 8, "320x240");
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "gcs", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["location"], "gs://streamd-vod/site-a");
    let prefix = format!("site-a/live/gcs/{id}/");
    let names = fake.names("streamd-vod", &prefix);
    assert!(
        names.contains(&format!("{prefix}video/init_0.mp4")),
        "{names:?}"
    );
    assert!(names.contains(&format!("{prefix}audio/0.m4s")), "{names:?}");
    assert!(names.len() >= 8, "{names:?}");
    // Served back from the store (every segment is uploaded).
    let master_url = server.url(&format!("/vod/{id}/master.m3u8"));
    decodes_cleanly(&master_url).await;
    assert!(
        fake.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("GET /streamd-vod/site-a/live/gcs/")),
        "segments were read from the store"
    );
    assert_eq!(
        api(&server, "DELETE", &format!("/api/recordings/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(fake.names("streamd-vod", &prefix), Vec::<String>::new());
    // Every call carried the service account's token; one without is
    // refused.
    assert_eq!(*fake.refused.lock().unwrap(), Vec::<String>::new());
    let bare = get(&format!(
        "http://{addr}/streamd-vod/{prefix}video/init_0.mp4"
    ))
    .await;
    assert_eq!(bare.status, 401);
    server.stop().await;
}

/// With `signed_urls` on a `gs://` location, an uploaded segment is
/// answered with a redirect to a V4-signed URL (GOOG4-RSA-SHA256, signed
/// with the service account's key), which the FAKE GCS verifies as Google
/// documents it (tests/common/gcs_fake.rs): the bytes are the segment's,
/// ffmpeg plays the VOD through the redirects, and a URL changed in its
/// object, expiry or signature is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_gcs_segments_redirect_to_v4_signed_urls() {
    let keys = tempfile::tempdir().unwrap();
    let (fake, addr, key_file) = common::gcs_fake::FakeGcs::start(keys.path()).await;
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.record.location = "gs://streamd-vod/signed".into();
        c.record.gcs_credentials = key_file;
        c.record.segment_target = Duration::from_secs(2);
        c.record.signed_urls = Duration::from_secs(300);
    })
    .await;
    let (status, err) = common::finish(server.publish("live", "gsigned", 4, "320x240")).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "gsigned", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    let seg = get(&server.url(&format!("/vod/{id}/video/0.m4s"))).await;
    assert_eq!(seg.status, 302);
    let location = seg.header("location").unwrap().to_owned();
    let object = format!("http://{addr}/streamd-vod/signed/live/gsigned/{id}/video/0.m4s?");
    assert!(
        location.starts_with(&object)
            && location.contains("X-Goog-Algorithm=GOOG4-RSA-SHA256")
            && location.contains("X-Goog-Expires=300")
            && location.contains("X-Goog-Signature="),
        "{location}"
    );
    let body = get(&location).await;
    assert_eq!(body.status, 200, "{}", String::from_utf8_lossy(&body.body));
    assert_eq!(&body.body[4..8], b"moof", "a CMAF fragment");
    decodes_cleanly(&server.url(&format!("/vod/{id}/master.m3u8"))).await;
    assert_eq!(*fake.refused.lock().unwrap(), Vec::<String>::new());
    // Changed after signing: another object, a longer life, a signature
    // with one digit changed. Each is refused.
    let signature_at = location.find("X-Goog-Signature=").unwrap() + "X-Goog-Signature=".len();
    let mut forged = location.clone().into_bytes();
    forged[signature_at] = if forged[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    for (what, url) in [
        (
            "another object",
            location.replace("/video/0.m4s?", "/audio/0.m4s?"),
        ),
        (
            "a longer life",
            location.replace("X-Goog-Expires=300", "X-Goog-Expires=900"),
        ),
        ("a changed signature", String::from_utf8(forged).unwrap()),
    ] {
        assert_eq!(get(&url).await.status, 403, "{what}: {url}");
    }
    assert_eq!(fake.refused.lock().unwrap().len(), 3);
    server.stop().await;
}

/// A recording deleted while its segments wait for a store that is down:
/// the spool is emptied at once, and when the store returns nothing of it
/// is uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_deleted_while_it_uploads_leaves_nothing() {
    let moto = moto("rec-del").await;
    let gate = gate(moto.addr).await;
    gate.mode.send_replace(Mode::Refuse);
    let endpoint = format!("http://{}", gate.addr);
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.record.node = "deleted".into();
        record_to_s3(c, "s3://rec-del", &endpoint);
    })
    .await;
    let publisher = server.publish("live", "del", 5, "320x240");
    let live = wait_status(&server, "live", "del", "recording", Duration::from_secs(20)).await;
    let id = live["id"].as_str().unwrap().to_owned();
    // Not while it is being made.
    assert_eq!(
        api(&server, "DELETE", &format!("/api/recordings/{id}"))
            .await
            .status,
        409
    );
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    wait_status(&server, "live", "del", "uploading", Duration::from_secs(20)).await;
    assert!(
        server
            .metric(&rec_metric("streamd_record_spool_bytes", "deleted"))
            .await
            > 0.0
    );
    assert_eq!(
        api(&server, "DELETE", &format!("/api/recordings/{id}"))
            .await
            .status,
        204
    );
    assert_eq!(
        server
            .metric(&rec_metric("streamd_record_spool_bytes", "deleted"))
            .await,
        0.0
    );
    assert!(recordings(&server, "live", "del").await.is_empty());
    gate.mode.send_replace(Mode::Open);
    // The uploader's next round (its backoff is at most 30 s) finds the
    // journal empty; the bucket stays empty.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while server
        .metric(&rec_metric("streamd_record_upload_backlog", "deleted"))
        .await
        > 0.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog never emptied"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(s3_keys(&moto, "rec-del", "").await, Vec::<String>::new());
    server.stop().await;
}

/// hls.js in Chromium plays a recording's VOD from the start, seeks into
/// its middle and plays on; the picture it shows there is the one the
/// publisher drew that far into the recording (its clock, read from the
/// picture, has advanced by the seek, within a frame or two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hlsjs_plays_the_vod_and_seeks_into_its_middle() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let publisher = server.publish("live", "seek", 20, "320x240");
    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "seek", "ready", Duration::from_secs(30)).await;
    let master = server.url(&format!("/vod/{}/master.m3u8", r["id"].as_str().unwrap()));
    let script = common::browser_dir().join("vod.mjs");
    let (ok, out, err) = common::run("node", &[script.to_str().unwrap(), &master]).await;
    assert!(ok, "vod.mjs failed: {err}\n{out}");
    let result = common::report(&out, &err);
    eprintln!("hls.js VOD: {result}");
    assert_eq!(result["errors"], serde_json::json!([]), "{result}");
    assert_eq!(result["type"], "VOD", "{result}");
    let duration = result["duration"].as_f64().unwrap();
    assert!(
        (duration - 20.0).abs() <= 0.3,
        "hls.js sees {duration} s: {result}"
    );
    assert_eq!(result["advancedAfterSeek"], true, "{result}");
    let (first, landed) = (&result["first"], &result["landed"]);
    let landed_at = landed["mediaTime"].as_f64().unwrap();
    assert!(
        (landed_at - result["target"].as_f64().unwrap()).abs() <= 0.1,
        "landed at {landed_at} s: {result}"
    );
    let media_step = landed_at - first["mediaTime"].as_f64().unwrap();
    let clock_step = (landed["code"]
        .as_f64()
        .expect("the clock reads after the seek")
        - first["code"]
            .as_f64()
            .expect("the clock reads at the start"))
        / 1000.0;
    assert!(
        (clock_step - media_step).abs() <= 2.0 * FRAME + 0.01,
        "the picture after the seek was drawn {clock_step} s after the first, {media_step} s into the media: {result}"
    );
    server.stop().await;
}

/// A publisher back within the reconnect grace continues the same
/// recording, after an `EXT-X-DISCONTINUITY`: one recording, both
/// sessions in it, one cut in the timeline, decodable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_back_within_the_grace_continues_the_recording() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(6)).await;
    let (status, err) = common::finish(server.publish("live", "again", 4, "320x240")).await;
    assert!(status.success(), "first publish: {err}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, err) = common::finish(server.publish("live", "again", 4, "320x240")).await;
    assert!(status.success(), "second publish: {err}");
    let r = wait_status(&server, "live", "again", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    let text = get(&server.url(&format!("/vod/{id}/video.m3u8")))
        .await
        .text();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY").count(), 1, "{text}");
    let duration = r["durationMs"].as_f64().unwrap() / 1000.0;
    assert!(
        (7.5..=8.5).contains(&duration),
        "{duration} s of two 4 s sessions"
    );
    let master_url = server.url(&format!("/vod/{id}/master.m3u8"));
    let video = packet_times(&master_url, "v:0").await;
    assert!(
        video.len() as f64 >= 8.0 * FPS - 2.0,
        "{} frames",
        video.len()
    );
    // The one cut is the reconnect.
    assert_eq!(
        gaps(&video, 1.5 * FRAME).len(),
        1,
        "{:?}",
        gaps(&video, 1.5 * FRAME)
    );
    decodes_cleanly(&master_url).await;
    server.stop().await;
}

/// A private stream's recordings need its playback token, as its live
/// playback does: none is 401, a wrong one 403; with one, every URI the
/// playlists name carries it, and nothing is for shared caches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_streams_recordings_need_its_playback_token() {
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let auth = bearer(&server);
    let made = common::request_with(
        "POST",
        &server.url("/api/streams"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        r#"{"name":"Secret","isPrivate":true}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made: Value = serde_json::from_str(&made.text()).unwrap();
    let id = made["id"].as_str().unwrap();
    let key = made["streamKey"].as_str().unwrap();
    let (status, err) = common::finish(server.publish("live", key, 4, "320x240")).await;
    assert!(status.success(), "publisher: {err}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rec = loop {
        let r = api(&server, "GET", &format!("/api/streams/{id}/recordings")).await;
        let v: Value = serde_json::from_str(&r.text()).unwrap();
        if v[0]["status"] == "ready" {
            break v[0]["id"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let master = server.url(&format!("/vod/{rec}/master.m3u8"));
    assert_eq!(get(&master).await.status, 401);
    assert_eq!(
        get(&format!("{master}?token=forged.token.here"))
            .await
            .status,
        403
    );
    assert_eq!(
        get(&server.url(&format!("/vod/{rec}/video/0.m4s")))
            .await
            .status,
        401
    );
    let minted = common::request_with(
        "POST",
        &server.url("/api/tokens/playback"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        format!(r#"{{"streamId":"{id}"}}"#),
    )
    .await;
    let token = serde_json::from_str::<Value>(&minted.text()).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let with = format!("{master}?token={token}");
    let m = get(&with).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("cache-control").unwrap().starts_with("private"),
        "{:?}",
        m.headers
    );
    assert!(
        m.text().contains(&format!("video.m3u8?token={token}")),
        "{}",
        m.text()
    );
    let media = get(&server.url(&format!("/vod/{rec}/video.m3u8?token={token}")))
        .await
        .text();
    assert!(
        media.contains(&format!("video/0.m4s?token={token}")),
        "{media}"
    );
    let seg = get(&server.url(&format!("/vod/{rec}/video/0.m4s?token={token}"))).await;
    assert_eq!(seg.status, 200);
    assert!(seg.header("cache-control").unwrap().starts_with("private"));
    decodes_cleanly(&with).await;
    server.stop().await;
}

/// With `renditions = "all"`, the transcoded ladder is recorded: an ABR
/// master with a variant per rung, their segments cut at the same times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_ladder_is_recorded_as_an_abr_vod() {
    use streamd::config::{RecordRenditions, RungConfig};
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.transcode.enabled = true;
        c.transcode.ladder = vec![
            RungConfig::new("240p", 320, 240, 400),
            RungConfig::new("120p", 160, 120, 150),
        ];
        c.record.renditions = RecordRenditions::All;
        c.record.segment_target = Duration::from_secs(2);
    })
    .await;
    let (status, err) = common::finish(server.publish("live", "ladder", 8, "320x240")).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "ladder", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    let master = get(&server.url(&format!("/vod/{id}/master.m3u8")))
        .await
        .text();
    assert_eq!(master.matches("#EXT-X-STREAM-INF").count(), 2, "{master}");
    assert!(
        master.contains("RESOLUTION=320x240") && master.contains("RESOLUTION=160x120"),
        "{master}"
    );
    let extinf = |name: &str| {
        let url = server.url(&format!("/vod/{id}/{name}.m3u8"));
        async move {
            get(&url)
                .await
                .text()
                .lines()
                .filter_map(|l| l.strip_prefix("#EXTINF:"))
                .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        }
    };
    let (top, low) = (extinf("240p").await, extinf("120p").await);
    assert!(top.len() >= 3, "{top:?}");
    assert_eq!(top.len(), low.len(), "{top:?} {low:?}");
    for (a, b) in top.iter().zip(&low) {
        assert!(
            (a - b).abs() <= FRAME,
            "segments cut apart: {top:?} {low:?}"
        );
    }
    for rung in ["240p", "120p"] {
        decodes_cleanly(&server.url(&format!("/vod/{id}/{rung}.m3u8"))).await;
    }
    server.stop().await;
}

/// `max_age`: a recording older than it is deleted (journal and objects),
/// a recent one is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_older_than_max_age_are_deleted() {
    use streamd::store::recordings::*;
    let server = TestServer::start(|c| c.record.max_age = Duration::from_secs(60)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let old = new_recording_id();
    let recent = new_recording_id();
    for (id, started_at) in [(&old, now - 7_200_000), (&recent, now)] {
        server
            .access
            .store
            .create_recording(&Recording {
                id: id.clone(),
                app: "live".into(),
                stream: "kept".into(),
                status: RecordingStatus::Ready,
                node: "elsewhere".into(),
                location: String::new(),
                renditions: vec![],
                started_at,
                ended_at: Some(started_at + 1000),
                duration_ms: 1000,
                bytes: 0,
            })
            .await
            .unwrap();
    }
    // Checked every tenth of max_age.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.access.store.recording(&old).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old recording was kept"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        server
            .access
            .store
            .recording(&recent)
            .await
            .unwrap()
            .is_some()
    );
    server.stop().await;
}

/// With `signed_urls`, an uploaded segment is answered with a redirect to
/// a URL the S3 store signed (expiring), and the store serves it: the
/// bytes are the segment's, and ffmpeg plays the VOD through the
/// redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_segments_redirect_to_signed_urls() {
    let moto = moto("rec-signed").await;
    let endpoint = format!("http://{}", moto.addr);
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        record_to_s3(c, "s3://rec-signed/vod", &endpoint);
        c.record.signed_urls = Duration::from_secs(300);
    })
    .await;
    let (status, err) = common::finish(server.publish("live", "signed", 4, "320x240")).await;
    assert!(status.success(), "publisher: {err}");
    let r = wait_status(&server, "live", "signed", "ready", Duration::from_secs(30)).await;
    let id = r["id"].as_str().unwrap();
    let seg = get(&server.url(&format!("/vod/{id}/video/0.m4s"))).await;
    assert_eq!(seg.status, 302);
    let location = seg.header("location").unwrap().to_owned();
    assert!(
        location.starts_with(&format!(
            "{endpoint}/rec-signed/vod/live/signed/{id}/video/0.m4s?"
        )) && location.contains("X-Amz-Signature=")
            && location.contains("X-Amz-Expires=300"),
        "{location}"
    );
    let body = get(&location).await;
    assert_eq!(body.status, 200);
    assert_eq!(&body.body[4..8], b"moof", "a CMAF fragment");
    // Playlists are still streamd's.
    let media = get(&server.url(&format!("/vod/{id}/video.m3u8"))).await;
    assert_eq!(media.status, 200);
    decodes_cleanly(&server.url(&format!("/vod/{id}/master.m3u8"))).await;
    server.stop().await;
}

/// The spool's disk really full (a 1 MiB tmpfs, mounted in a private
/// mount namespace for streamd alone) while the store is down: writes fail
/// with a clear error naming the disk, live LL-HLS carries on, and once
/// the store is back and the spool drains, recording resumes: the VOD
/// holds both sides of the hole, marked, and decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_is_a_clear_error_and_live_carries_on() {
    let moto = moto("rec-enospc").await;
    let gate = gate(moto.addr).await;
    gate.mode.send_replace(Mode::Refuse);
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let (rtmp, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let config = binary_config(
        dir.path(),
        &rtmp,
        &http,
        &format!(
            "segment_target = \"1s\"\nspool_dir = \"{}\"\n\
             location = \"s3://rec-enospc\"\ns3_endpoint = \"http://{}\"\n\
             s3_access_key_id = \"testing\"\ns3_secret_access_key = \"testing\"\ns3_region = \"us-east-1\"\n",
            spool.display(),
            gate.addr
        ),
    );
    // Without root, a user namespace maps us to root inside it.
    let unshare = if unsafe { libc::geteuid() } == 0 {
        "-m"
    } else {
        "-rm"
    };
    let log = dir.path().join("streamd.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("unshare")
        .args([
            unshare,
            "sh",
            "-c",
            "mount -t tmpfs -o size=1m streamd-spool \"$1\" && exec \"$2\" --config \"$3\"",
            "sh",
        ])
        .arg(&spool)
        .arg(BIN)
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("unshare runs");
    healthy(&http).await;
    // Long enough to go on after the store is back and the uploader's
    // backoff (30 s at most) has drained the spool.
    let publisher = common::Publish {
        url: &format!("rtmp://{rtmp}/live/enospc"),
        seconds: 55,
        size: "640x360",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let full = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(l) = text
            .lines()
            .find(|l| l.contains("cannot write to the spool"))
        {
            break l.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the spool never filled:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(full.contains("No space left on device"), "{full}");
    gate.mode.send_replace(Mode::Open);
    // Live LL-HLS goes on: its playlist keeps growing.
    let master = get(&format!("http://{http}/live/enospc/llhls.m3u8")).await;
    assert_eq!(master.status, 200, "{}", master.text());
    let video = common::media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .expect("a video rendition");
    let media = format!("http://{http}/live/enospc/{video}");
    // The number of the last complete segment listed.
    let newest = |t: &str| {
        let first: usize = t
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no media sequence:\n{t}"));
        first + t.lines().filter(|l| l.starts_with("#EXTINF")).count()
    };
    let n0 = newest(&get(&media).await.text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get(&media).await.text();
    assert!(newest(&after) > n0, "live stalled:\n{after}");

    let (status, err) = common::finish(publisher).await;
    assert!(status.success(), "publisher: {err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let errors = text.matches("cannot write to the spool").count();
    assert!(
        errors <= 10,
        "{errors} spool errors logged: not rate-limited"
    );
    let auth = streamd::auth::Auth::new(common::TEST_SECRET, Default::default());
    let bearer = format!(
        "Bearer {}",
        auth.mint_api("tester", Duration::from_secs(600))
    );
    let url = format!("http://{http}/api/recordings?stream=live/enospc");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let resp = request("GET", &url, &[("authorization", &bearer)]).await;
        let all: Value = serde_json::from_str(&resp.text()).unwrap();
        if all[0]["status"] == "ready" {
            break all[0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready: {all}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let id = r["id"].as_str().unwrap();
    let text = get(&format!("http://{http}/vod/{id}/video.m3u8"))
        .await
        .text();
    let logged = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("record"))
            .take(60)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        text.contains("#EXT-X-DISCONTINUITY"),
        "{text}\n{}",
        logged()
    );
    // A failed video write skips the next moment in audio too: both have
    // a hole, so a player closing them keeps the two in sync.
    let audio = get(&format!("http://{http}/vod/{id}/audio.m3u8"))
        .await
        .text();
    assert!(
        audio.contains("#EXT-X-DISCONTINUITY"),
        "no hole in audio:\n{audio}\n{}",
        logged()
    );
    // Both sides of the hole (at least one 1 s segment) are in the video
    // rendition. (The recording's durationMs is its longest rendition's:
    // the audio's small writes may all have fitted, so it can be whole.)
    let duration: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!(
        (10.0..=54.5).contains(&duration),
        "{duration} s of video recorded around the hole:\n{text}\n{}",
        logged()
    );
    decodes_cleanly(&format!("http://{http}/vod/{id}/master.m3u8")).await;
    child.start_kill().unwrap();
}
