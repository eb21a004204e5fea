//! Independent WebRTC players against streamd's OME signalling: the real,
//! unmodified OvenPlayer (npm `ovenplayer`) in headless Chromium, and
//! aiortc (Python: its own ICE, DTLS, SRTP and decoders).
//!
//! Needs Chromium, the npm packages in tests/browser and the virtualenv in
//! tests/python/.venv (the README's test command installs all three), and
//! root or user namespaces for `unshare -n`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Transcoding plus a player take most of both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// OvenPlayer plays over UDP, on the host candidate of the first engine.
#[tokio::test]
async fn ovenplayer_plays_webrtc_in_chromium() {
    let _one = SERIAL.lock().await;
    let r = ovenplayer_in_netns(&[], "ws://127.0.0.1:3333/live/cam", 10).await;
    let pair = r["candidatePair"]["remote"].as_str().unwrap_or("");
    assert!(pair.starts_with("127.0.0.1:10000/udp host"), "{r}");
}

/// With OvenPlayer's `?transport=tcp`, the offer carries only the passive
/// ICE-TCP candidate, and Chromium plays over TCP (RFC 6544/4571).
#[tokio::test]
async fn ovenplayer_plays_over_ice_tcp() {
    let _one = SERIAL.lock().await;
    let r = ovenplayer_in_netns(&[], "ws://127.0.0.1:3333/live/cam?transport=tcp", 6).await;
    let pair = r["candidatePair"]["remote"].as_str().unwrap_or("");
    assert!(pair.starts_with("127.0.0.1:3478/tcp host"), "{r}");
}

/// The interpreter of the tests' virtualenv (aiortc and websockets).
fn python() -> PathBuf {
    let python = tests_dir().join("python/.venv/bin/python");
    assert!(
        python.exists(),
        "aiortc missing: python3 -m venv tests/python/.venv && tests/python/.venv/bin/pip install -r tests/python/requirements.txt (the README's test command does)"
    );
    python
}

/// aiortc completes OME's signalling (request_offer, offer with separate
/// candidates, answer), decodes H.264 and Opus, and follows a
/// change_rendition to 180p half-way.
#[tokio::test]
async fn aiortc_plays_and_switches_rendition() {
    let _one = SERIAL.lock().await;
    let python = python();
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let publisher = server.publish("live", "py", 60, "640x360");
    server.master_when_ready("live", "py").await;
    // The Opus track comes with the transcoder's first audio.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let script = tests_dir().join("python/aiortc_viewer.py");
    let url = server.ws_url("/live/py");
    let (ok, out, err) = run(
        python.to_str().unwrap(),
        &[script.to_str().unwrap(), &url, "8", "180p"],
    )
    .await;
    assert!(ok, "aiortc_viewer.py failed: {err}\n{out}");
    let r = report(&out, &err);
    eprintln!("aiortc: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    // 8 s at 30 fps, minus connection set-up.
    assert!(r["video_frames"].as_u64().unwrap() >= 120, "{r}");
    assert!(r["audio_frames"].as_u64().unwrap() >= 200, "{r}");
    assert_eq!(r["audio_format"]["rate"], 48000, "{r}");
    assert_eq!(r["audio_format"]["layout"], "stereo", "{r}");
    // Glass to glass, from the clock in the picture; the clicks heard, one
    // a second, in step with the pictures.
    let (p50, p95) = clock::check_joined(&r, 6.0, 2000, clock::LADDER_GROUP_MS);
    let clicks = r["audio_clock"]["clicks"].as_u64().unwrap();
    assert!(clicks >= 5, "{clicks} clicks heard in 8 s: {r}");
    let av = r["av_offset_ms"].as_i64().unwrap();
    eprintln!(
        "aiortc WebRTC glass-to-glass: p50 {p50} ms, p95 {p95} ms; sound {av} ms after picture"
    );
    // Lip sync: generous, so only a broken pipeline fails it.
    assert!(av.abs() < 200, "sound {av} ms after picture: {r}");
    // Started on 360p (the start bitrate fits it), then only 180p after
    // the switch.
    let sizes: Vec<&str> = r["size_changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["size"].as_str())
        .collect();
    assert_eq!(sizes, ["640x360", "320x180"], "{r}");
    let kinds: Vec<&str> = r["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["playlist", "rendition_changed", "rendition_changed"],
        "{r}"
    );
    drop(publisher);
    server.stop().await;
}

/// aiortc plays over WHEP: its own offer (receive-only H.264 and Opus) by
/// POST, our answer, H.264 and Opus decoded with the clock in the picture
/// read; DELETE on the session's Location ends it and the engine lets the
/// viewer go.
#[tokio::test]
async fn aiortc_plays_over_whep() {
    let _one = SERIAL.lock().await;
    let python = python();
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let publisher = server.publish("live", "pywhep", 60, "640x360");
    server.master_when_ready("live", "pywhep").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let script = tests_dir().join("python/aiortc_viewer.py");
    let url = server.url("/live/pywhep/whep");
    let (ok, out, err) = run(
        python.to_str().unwrap(),
        &[script.to_str().unwrap(), &url, "8"],
    )
    .await;
    assert!(ok, "aiortc_viewer.py failed: {err}\n{out}");
    let r = report(&out, &err);
    eprintln!("aiortc WHEP: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["whep_status"], 201, "{r}");
    assert!(r["video_frames"].as_u64().unwrap() >= 120, "{r}");
    assert!(r["audio_frames"].as_u64().unwrap() >= 200, "{r}");
    assert_eq!(r["audio_format"]["rate"], 48000, "{r}");
    let sizes = r["sizes"].as_object().unwrap();
    assert!(sizes.contains_key("640x360"), "{r}");
    let (p50, p95) = clock::check_joined(&r, 6.0, 2000, clock::LADDER_GROUP_MS);
    eprintln!("aiortc WHEP glass-to-glass: p50 {p50} ms, p95 {p95} ms");
    assert_eq!(r["whep_delete_status"], 200, "{r}");
    assert!(
        common::webrtc::viewers_gone(&server).await,
        "the deleted WHEP viewer is still in the engine"
    );
    drop(publisher);
    server.stop().await;
}
