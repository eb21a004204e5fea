//! Enhanced RTMP end to end, against real publishers and players:
//! - FFmpeg 9 (the static build of the `imageio-ffmpeg` PyPI package; the
//!   README's test command installs it, and without it these tests fail)
//!   publishes HEVC (libx265) and AV1 (SVT-AV1) with AAC over RTMP, in
//!   Enhanced RTMP's `hvc1`/`av01` FourCC tags;
//! - the source passes through to LL-HLS as CMAF `hvc1`/`av01` with its
//!   CODECS string, beside the ladder's H.264 rungs in one master playlist;
//! - ffprobe decodes the passthrough and a rung, hls.js (Chromium) plays
//!   the master, switching through every level it can decode, and a WebRTC
//!   viewer decodes the ladder's H.264 and Opus;
//! - bad input: unknown FourCCs and truncated `hvcC`/`av1C` records close
//!   their publisher with a clear log line while a witness plays on.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::rtmp::{RtmpClient, Tag};
use common::webrtc::{Viewer, assert_viewer_decodes};
use common::*;
use tokio::process::{Child, Command};

/// Transcoding and Chromium take both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `seconds` of the clocked test source at `size`, encoded with `video`
/// (encoder arguments) and AAC, in real time over RTMP to `url`.
fn publish(url: &str, seconds: u32, size: &str, video: &[&str]) -> Child {
    ffmpeg9_publish(url, "flv", seconds, size, video)
}

/// libx265 with B-frames, as OBS sends HEVC: composition offsets matter.
const HEVC: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-bf",
    "2",
    "-x265-params",
    "log-level=error:keyint=30:min-keyint=30:scenecut=0",
];

/// SVT-AV1 at its fastest preset, low-delay and CBR (a live encoder's
/// settings; low delay takes no VBR).
const AV1: &[&str] = &[
    "-c:v",
    "libsvtav1",
    "-preset",
    "12",
    "-svtav1-params",
    "pred-struct=1:keyint=30:rc=2",
];

/// hls.js plays `master_url` for 10 s, forcing the next level every 2 s
/// (tests/browser/hlsjs.mjs `switch`), without an error. Returns its
/// report and the levels it played, each once, in order.
async fn hlsjs_switching(master_url: &str) -> (serde_json::Value, Vec<u64>) {
    let result = hlsjs(master_url, &["10", "switch"], &[]).await;
    eprintln!("hls.js: {result}");
    let mut switched: Vec<u64> = result["switched"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_u64())
        .collect();
    switched.sort_unstable();
    switched.dedup();
    (result, switched)
}

/// Publishes `video` (640x360) over Enhanced RTMP with the small ladder
/// on; checks the master, ffprobe's reading of the passthrough and a rung,
/// hls.js switching through the levels, and WebRTC decoding the rungs.
/// Returns hls.js's report.
async fn passthrough_and_ladder(
    stream: &str,
    video: &[&str],
    codec: &str,
) -> (serde_json::Value, Vec<u64>) {
    browser_dir();
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let mut publisher = publish(&server.rtmp_url("live", stream), 45, "640x360", video);
    wait_tracks(&server, "live", stream, &["video", "audio", "360p", "180p"]).await;
    stream_advances(&server, "live", stream, Duration::from_secs(20)).await;

    let master = server.master_when_ready("live", stream).await.text();
    let source = variant(&master, codec).unwrap_or_else(|| panic!("no {codec} variant: {master}"));
    let rung = variant(&master, "avc1.").unwrap_or_else(|| panic!("no H.264 rung: {master}"));
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");
    // The rungs come first: a player that does not read CODECS starts on H.264.
    assert!(
        master.find(&rung).unwrap() < master.find(&source).unwrap(),
        "{master}"
    );

    // ffprobe (Debian's FFmpeg) decodes the passthrough and a rung.
    let (name, w, h, frames) = probe_video(&server.url(&format!("/live/{stream}/{source}"))).await;
    let expect = if codec == "hvc1." { "hevc" } else { "av1" };
    assert_eq!((name.as_str(), w, h), (expect, 640, 360), "the passthrough");
    assert!(frames >= 30, "{frames} frames of the passthrough decoded");
    let (name, _, _, frames) = probe_video(&server.url(&format!("/live/{stream}/{rung}"))).await;
    assert_eq!(name, "h264");
    assert!(frames >= 30, "{frames} frames of {rung} decoded");

    // hls.js plays the master, switching through every level Chromium's
    // MediaSource can decode.
    let (result, switched) =
        hlsjs_switching(&server.url(&format!("/live/{stream}/llhls.m3u8"))).await;
    let advanced = result["advanced"].as_f64().unwrap();
    assert!(advanced >= 6.0, "playback advanced {advanced} s: {result}");
    let (p50, p95) = clock::check(&result, advanced, 6000);
    eprintln!("{codec} source to LL-HLS (hls.js) glass-to-glass: p50 {p50} ms, p95 {p95} ms");

    // WebRTC: the ladder's H.264 and the Opus made from the AAC.
    assert_viewer_decodes(&server.ws_url(&format!("/live/{stream}"))).await;

    let _ = publisher.kill().await;
    server.stop().await;
    (result, switched)
}

#[tokio::test]
async fn hevc_over_enhanced_rtmp_passes_through_beside_the_h264_ladder() {
    let _one = SERIAL.lock().await;
    let (result, _) = passthrough_and_ladder("hevc", HEVC, "hvc1.").await;
    // Both H.264 rungs play; Chromium here has no HEVC decoder, so hls.js
    // leaves the passthrough out rather than failing on it.
    let levels = result["levels"].as_array().unwrap();
    assert!(levels.len() >= 2, "{result}");
}

#[tokio::test]
async fn av1_over_enhanced_rtmp_passes_through_beside_the_h264_ladder() {
    let _one = SERIAL.lock().await;
    let (result, switched) = passthrough_and_ladder("av1", AV1, "av01.").await;
    // Chromium decodes AV1: hls.js has the passthrough and both rungs, and
    // played each of them in turn.
    let levels = result["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 3, "{result}");
    assert_eq!(switched, [0, 1, 2], "{result}");
}

/// The Enhanced RTMP tags of a stream FFmpeg 9 writes to FLV (`video`
/// encoder arguments, 320x240, one second).
async fn enhanced_tags(video: &[&str]) -> Vec<Tag> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.flv");
    let status = Command::new(ffmpeg9())
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-t",
            "1",
        ])
        .args(video)
        .args(["-pix_fmt", "yuv420p", "-g", "30", "-y"])
        .arg(&path)
        .status()
        .await
        .expect("ffmpeg 9 runs");
    assert!(status.success());
    common::rtmp::read_flv(&path)
}

/// Publishes `tags` and says whether the server closed the connection.
async fn closed_after(server: &TestServer, stream: &str, tags: &[Tag]) -> bool {
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.publish(stream).await.unwrap();
    for t in tags {
        if c.send(t).await.is_err() {
            return true;
        }
    }
    c.closed_by_server(Duration::from_secs(5)).await
}

#[tokio::test]
async fn unknown_fourccs_and_truncated_records_close_only_their_publisher() {
    let _one = SERIAL.lock().await;
    let (logs, _guard) = Logs::capture_every_thread();
    let server = TestServer::start(|_| {}).await;
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "witness").await;
    server.master_when_ready("live", "witness").await;

    let hevc = enhanced_tags(HEVC).await;
    let av1 = enhanced_tags(AV1).await;
    let seq = |tags: &[Tag]| {
        tags.iter()
            .position(|t| t.kind == 9 && t.body[0] & 0x8f == 0x80)
            .expect("a sequence start")
    };

    // The first HEVC stream publishes as it came: the control.
    let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    c.publish("hevc-ok").await.unwrap();
    for t in &hevc {
        c.send(t).await.unwrap();
    }
    wait_tracks(&server, "live", "hevc-ok", &["video"]).await;
    drop(c);

    // An unknown FourCC.
    let mut tags = hevc.clone();
    let i = seq(&tags);
    let mut body = tags[i].body.to_vec();
    body[1..5].copy_from_slice(b"vvc1");
    tags[i].body = body.into();
    assert!(closed_after(&server, "vvc", &tags).await);
    logs.wait_for(&["vvc1", "not supported"], Duration::from_secs(5))
        .await;

    // hvcC and av1C cut short, at several lengths.
    for (name, tags, cuts) in [("hvcc", &hevc, [6, 20, 40]), ("av1c", &av1, [6, 9, 12])] {
        for cut in cuts {
            let mut tags = tags.clone();
            let i = seq(&tags);
            tags[i].body.truncate(5 + cut);
            let stream = format!("{name}-{cut}");
            assert!(
                closed_after(&server, &stream, &tags[..=i]).await,
                "{stream}"
            );
        }
    }
    logs.wait_for(&["bad HEVC sequence header"], Duration::from_secs(5))
        .await;
    logs.wait_for(&["bad AV1 sequence header"], Duration::from_secs(5))
        .await;

    stream_advances(&server, "live", "witness", Duration::from_secs(10)).await;
    server.stop().await;
}

/// Every tag of FFmpeg 9's Enhanced RTMP output (the fixtures) goes through
/// ingest: nothing is dropped or called corrupt, the track carries the
/// codec's configuration, and HEVC's B-frames keep their composition
/// offsets.
#[test]
fn ffmpeg_enhanced_rtmp_tags_reach_the_bus_whole() {
    use std::path::Path;
    use streamd::bus::{Registry, Retention, StartAt, StreamPath, TrackEvent, TryNext};
    use streamd::ingest::tags::{Arrival, TagIngest, VIDEO_TRACK};
    use streamd::media::CodecConfig;

    for (file, codec) in [
        ("clip-hevc-160x120-1s.flv", "hvc1.1.6.L60.90"),
        ("clip-av1-160x120-1s.flv", "av01.0.00M.08"),
    ] {
        let tags = common::rtmp::read_flv(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(file),
        );
        let registry = Registry::new(Duration::ZERO, Retention::default());
        let b = registry
            .publish(StreamPath::new("live", "x").unwrap())
            .unwrap();
        let mut ingest = TagIngest::new(b);
        let mut consumer = None;
        let at = Arrival::now();
        for t in &tags {
            let notice = match t.kind {
                9 => ingest.video(t.body.clone(), t.timestamp, at),
                8 => ingest.audio(t.body.clone(), t.timestamp, at),
                _ => continue,
            };
            assert!(matches!(notice, Ok(None)), "{file}: {notice:?}");
            if consumer.is_none() {
                consumer =
                    ingest
                        .broadcast()
                        .consumer()
                        .subscribe_at(VIDEO_TRACK, StartAt::Oldest, None);
            }
        }
        let stats = ingest.stats().clone();
        assert_eq!(stats.video_frames, 30, "{file}: {stats:?}");
        assert_eq!((stats.dropped_frames, stats.corrupt_frames), (0, 0));
        let mut consumer = consumer.expect("a video track");
        let (mut frames, mut keyframes, mut reordered) = (0, 0, 0);
        while let TryNext::Event(TrackEvent::Frame(f)) = consumer.try_next() {
            assert_eq!(f.group.config.codec_string(), codec, "{file}");
            assert!(matches!(
                *f.group.config,
                CodecConfig::Hevc(_) | CodecConfig::Av1(_)
            ));
            frames += 1;
            keyframes += usize::from(f.frame.keyframe);
            reordered += usize::from(f.frame.pts != f.frame.dts);
        }
        assert_eq!((frames, keyframes), (30, 2), "{file}");
        if codec.starts_with("hvc1") {
            assert!(reordered > 0, "B-frames keep their offsets");
        } else {
            assert_eq!(reordered, 0, "AV1 has no composition offsets");
        }
    }
}

/// Without a ladder, an HEVC or AV1 source goes to LL-HLS as it came and
/// WebRTC, which has no H.264 to send, answers OME's "Cannot create offer"
/// rather than an offer whose video never plays.
#[tokio::test]
async fn without_a_ladder_hevc_and_av1_serve_llhls_only() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(|_| {}).await;
    for (stream, file, codec) in [
        ("hevc", "clip-hevc-160x120-1s.flv", "hvc1.1.6.L60.90"),
        ("av1", "clip-av1-160x120-1s.flv", "av01.0.00M.08"),
    ] {
        let tags = common::rtmp::read_flv(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(file),
        );
        let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
        c.publish(stream).await.unwrap();
        // The 1 s clip four times over, at once: segments to list.
        for round in 0..4u32 {
            for t in tags.iter().filter(|t| round == 0 || t.kind != 18) {
                let mut t = t.clone();
                t.timestamp += round * 1000;
                c.send(&t).await.unwrap();
            }
        }
        let master = server.master_when_ready("live", stream).await.text();
        assert!(master.contains(codec), "{master}");
        assert!(master.contains("RESOLUTION=160x120"), "{master}");
        let refused = Viewer::connect(&server.ws_url(&format!("/live/{stream}")), false)
            .await
            .err()
            .unwrap_or_else(|| panic!("{stream}: WebRTC offered a stream it cannot play"));
        assert_eq!(refused.0["code"], 404, "{:?}", refused.0);
        drop(c);
    }
    server.stop().await;
}

/// A multitrack publisher: FFmpeg 9 sends its second video stream as
/// Enhanced RTMP track 1 (OBS's multitrack video does the same with up to
/// five). Without a ladder, both renditions are served as they came:
/// LL-HLS lists them largest first, ffprobe decodes each, hls.js plays and
/// switches between them, and a WebRTC viewer plays.
#[tokio::test]
async fn a_multitrack_publishers_renditions_are_served_as_they_came() {
    let _one = SERIAL.lock().await;
    browser_dir();
    let server = TestServer::start(|_| {}).await;
    let mut args = clock::source_args("640x360", 44100);
    let graph = args.iter().position(|a| a == "-filter_complex").unwrap() + 1;
    args[graph].push_str(";[v]split=2[v0][vs];[vs]scale=320:180[v1]");
    let map = args.iter().position(|a| a == "[v]").unwrap();
    args.splice(map..=map, ["[v0]", "-map", "[v1]"].map(String::from));
    let mut publisher = Command::new(ffmpeg9())
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .args(["-t", "40", "-c:v", "libx264", "-preset", "veryfast"])
        // Keyframes at the same frames in both, as a rendition ladder needs.
        .args([
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
        ])
        .args(["-b:v:0", "800k", "-b:v:1", "300k", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(["-f", "flv", &server.rtmp_url("live", "multi")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg 9 starts");
    wait_tracks(&server, "live", "multi", &["video", "video1", "audio"]).await;
    stream_advances(&server, "live", "multi", Duration::from_secs(20)).await;

    let master = server.master_when_ready("live", "multi").await.text();
    let sizes: Vec<&str> = master
        .lines()
        .filter_map(|l| attr(l, "RESOLUTION"))
        .collect();
    assert_eq!(sizes, ["640x360", "320x180"], "{master}");
    for (prefix, width) in [("video_", 640), ("video1_", 320)] {
        let uri = media_playlists(&master)
            .into_iter()
            .find(|u| u.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} playlist: {master}"));
        let (name, w, _, frames) = probe_video(&server.url(&format!("/live/multi/{uri}"))).await;
        assert_eq!((name.as_str(), w), ("h264", width), "{uri}");
        assert!(frames >= 30, "{frames} frames of {uri} decoded");
    }

    let (result, switched) = hlsjs_switching(&server.url("/live/multi/llhls.m3u8")).await;
    assert_eq!(result["levels"].as_array().unwrap().len(), 2, "{result}");
    assert_eq!(switched, [0, 1], "{result}");

    let mut viewer = Viewer::connect(&server.ws_url("/live/multi"), false)
        .await
        .expect("an offer");
    assert!(viewer.plays().await, "the WebRTC viewer got no video");
    let _ = publisher.kill().await;
    server.stop().await;
}
