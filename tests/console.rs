//! The web console in headless Chromium: a user pastes a token, creates a
//! stream through the page, publishes to the key it shows, and watches it
//! in the console's OvenPlayer, over WebRTC, or over LL-HLS when WebRTC
//! fails.
//!
//! Needs the console built (`npm --prefix web ci && npm --prefix web run
//! build`), Chromium and tests/browser's npm packages: the README's test
//! command provides all three.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;
use streamd::config::PublishPolicy;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn web_dir() -> PathBuf {
    browser_dir();
    let dir = repo().join("web/dist");
    assert!(
        dir.join("index.html").exists() && dir.join("vendor/ovenplayer.js").exists(),
        "the console is not built: npm --prefix web ci && npm --prefix web run build"
    );
    dir
}

fn api_token() -> String {
    let auth = streamd::auth::Auth::new(TEST_SECRET, Default::default());
    auth.mint_api("console-test", Duration::from_secs(600))
}

/// In a loopback-only namespace (Chromium's WebRTC needs it), streamd
/// serves the console; the user creates a stream, publishes with the shown
/// key, and the console plays it over WebRTC.
#[tokio::test]
async fn console_creates_a_stream_and_plays_it_over_webrtc() {
    let _one = SERIAL.lock().await;
    let (r, stderr) = player_in_netns("console.mjs", 8).await;
    eprintln!("console: {r}");
    assert_eq!(r["live"], true, "{r}");
    assert!(r["keyShown"].as_str().unwrap().starts_with("sk_"), "{r}");
    assert_eq!(r["source"], "WebRTC", "{r}\n{stderr}");
    assert_eq!(r["state"], "playing", "{r}");
    let advanced = r["advanced"].as_f64().unwrap();
    assert!(advanced >= 3.0, "{r}");
    assert_eq!(r["width"], 640, "{r}");
    let (p50, p95) = clock::check_joined(&r, advanced, 2000, clock::LADDER_GROUP_MS);
    eprintln!("console OvenPlayer WebRTC glass-to-glass: p50 {p50} ms, p95 {p95} ms");
}

/// tools/test-stream.sh creates a stream through the API and publishes to
/// it; the two test pages it prints play it: OvenPlayer over WebRTC and
/// hls.js over LL-HLS (in a loopback-only namespace, for WebRTC).
#[tokio::test]
async fn test_stream_script_and_test_pages_play() {
    let _one = SERIAL.lock().await;
    let (r, stderr) = player_in_netns("pages.mjs", 6).await;
    eprintln!("pages: {r}");
    assert_eq!(
        r["errors"].as_array().map(Vec::len),
        Some(0),
        "{r}\n{stderr}"
    );
    let lines: Vec<&str> = r["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(lines[0].starts_with("stream "), "{lines:?}");
    // Over 6 s each page's video advances: WebRTC by nearly all of it;
    // hls.js may stall once at its start (it can count a segment whole
    // with only its first parts, see benches/README.md), and the page
    // starts it again after 2 s, which the hls.js test counts, not this
    // one.
    for (page, least) in [("webrtc-test.html", 4.0), ("direct-hls-test.html", 2.0)] {
        let p = &r["pages"][page];
        assert_eq!(p["started"], true, "{page} did not play: {r}");
        assert!(p["advanced"].as_f64().unwrap() >= least, "{page}: {p}");
        assert_eq!(p["width"], 640, "{page}: {p}");
    }
}

/// Runs tests/browser/`player` for `seconds` against streamd in a
/// loopback-only namespace (netns.sh, no publisher of its own: the player
/// publishes), with an API token in STREAMD_TOKEN; its report and
/// netns.sh's stderr.
async fn player_in_netns(player: &str, seconds: u32) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = netns_config(dir.path(), "");
    let token = api_token();
    in_netns(
        &config,
        "http://127.0.0.1:3333",
        seconds,
        &[
            ("PLAYER", player),
            ("RTMP_URL", "none"),
            ("STREAMD_TOKEN", &token),
        ],
    )
    .await
}

/// The console served over HTTPS (a certificate the test made, which
/// Chromium is told to trust): the API hands it wss:// and https:// URLs,
/// and its OvenPlayer plays over WebRTC with signalling on wss://.
#[tokio::test]
async fn console_over_https_plays_webrtc_with_wss_signalling() {
    let _one = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::make_cert(dir.path(), "console", tls::in_a_month());
    let config = netns_config(
        dir.path(),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nlisten = \"127.0.0.1:3334\"\n",
            cert.cert.display(),
            cert.key.display()
        ),
    );
    let token = api_token();
    let (r, stderr) = in_netns(
        &config,
        "https://localhost:3334",
        8,
        &[
            ("PLAYER", "console.mjs"),
            ("RTMP_URL", "none"),
            ("STREAMD_TOKEN", &token),
            ("CHROMIUM_TRUST_SPKI", &cert.spki_sha256),
        ],
    )
    .await;
    eprintln!("console over https: {r}");
    let id = r["id"].as_str().unwrap();
    assert_eq!(
        r["webrtcUrl"],
        format!("wss://localhost:3334/live/{id}"),
        "{r}"
    );
    assert_eq!(
        r["llhlsUrl"],
        format!("https://localhost:3334/live/{id}/llhls.m3u8"),
        "{r}"
    );
    assert_eq!(r["source"], "WebRTC", "{r}\n{stderr}");
    assert_eq!(r["state"], "playing", "{r}");
    assert!(r["advanced"].as_f64().unwrap() >= 3.0, "{r}");
}

/// A config for netns.sh: streamd on the fixed ports of the namespace,
/// serving the console, the key policy on.
fn netns_config(dir: &Path, extra: &str) -> PathBuf {
    let web = web_dir();
    let config = dir.join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[rtmp]
listen = "127.0.0.1:1935"
[srt]
enabled = false
[http]
listen = "127.0.0.1:3333"
web_dir = "{}"
[webrtc]
udp_listen = "127.0.0.1:10000"
tcp_listen = "127.0.0.1:3478"
candidate_ips = ["127.0.0.1"]
[transcode]
enabled = false
[database]
data_dir = "{}"
[auth]
jwt_secret = "{TEST_SECRET}"
publish = "key"
"#,
            web.display(),
            dir.join("data").display()
        ) + extra,
    )
    .unwrap();
    config
}

/// With WebRTC off (its signalling answers 404), the console's OvenPlayer
/// falls back to LL-HLS by itself and plays; all of it over HTTPS (the
/// console, the API and LL-HLS), with a certificate the test made.
#[tokio::test]
async fn console_falls_back_to_llhls_when_webrtc_fails() {
    let _one = SERIAL.lock().await;
    let web = web_dir();
    let dir = tempfile::tempdir().unwrap();
    let cert = tls::make_cert(dir.path(), "console", tls::in_a_month());
    let server = TestServer::start(|c| {
        c.http.web_dir = web.clone();
        c.webrtc.enabled = false;
        c.auth.publish = PublishPolicy::Key;
        c.tls.cert = cert.cert.clone();
        c.tls.key = cert.key.clone();
        c.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let script = repo().join("tests/browser/console.mjs");
    let base = format!("https://localhost:{}", server.https.unwrap().port());
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([&base, "10"])
        .env("STREAMD_TOKEN", api_token())
        .env("CLOCK_FILTER", clock::filter_graph())
        .env("CHROMIUM_TRUST_SPKI", &cert.spki_sha256)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let r = report(&stdout, &stderr);
    eprintln!("console: {r}");
    assert_eq!(r["live"], true, "{r}");
    assert_eq!(r["source"], "LL-HLS", "{r}");
    assert!(
        r["llhlsUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://localhost:"),
        "{r}"
    );
    assert_eq!(r["state"], "playing", "{r}");
    let advanced = r["advanced"].as_f64().unwrap();
    assert!(advanced >= 2.0, "{r}");
    let (p50, p95) = clock::check(&r, advanced, 5000);
    eprintln!("console OvenPlayer LL-HLS glass-to-glass: p50 {p50} ms, p95 {p95} ms");
    // The console watches OvenPlayer's hls.js for its stuck loaders
    // (web/src/hls-watchdog.js); a stream that keeps one stuck fails.
    let unstuck = r["unstuck"].as_u64().expect("the console watches hls.js");
    assert!(unstuck <= 2, "{r}");
    // It tried WebRTC first, then moved on by itself.
    let tried: Vec<&str> = r["tried"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(tried, ["WebRTC", "LL-HLS"], "{r}");
    server.stop().await;
}

/// A stream's recordings in the console: once the stream has been
/// published and ended, its recording is listed `ready` with its length,
/// and Play plays it in the console's OvenPlayer (HLS VOD).
#[tokio::test]
async fn console_lists_a_recording_and_plays_it() {
    let _one = SERIAL.lock().await;
    let web = web_dir();
    let server = TestServer::start(|c| {
        c.http.web_dir = web.clone();
        c.bus.reconnect_grace = Duration::from_secs(1);
    })
    .await;
    let bearer = format!("Bearer {}", api_token());
    let made = request_with(
        "POST",
        &server.url("/api/streams"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        r#"{"name":"Recorded"}"#,
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let made: Value = serde_json::from_str(&made.text()).unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    // OBS's way: the key as the stream name.
    let key = made["streamKey"].as_str().unwrap();
    let (status, err) = finish(server.publish("live", key, 6, "320x240")).await;
    assert!(status.success(), "publisher: {err}");
    let listed = format!("/api/streams/{id}/recordings");
    poll_json(&server.url(&listed), &bearer, |v| v[0]["status"] == "ready").await;

    let script = repo().join("tests/browser/console_vod.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([&server.url(""), &id])
        .env("STREAMD_TOKEN", api_token())
        .output()
        .await
        .unwrap();
    let r = report(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("console VOD: {r}");
    assert_eq!(r["source"], "VOD", "{r}");
    assert_eq!(r["state"], "playing", "{r}");
    assert!(r["advanced"].as_f64().unwrap() >= 3.0, "{r}");
    assert_eq!(r["cells"][3], "ready", "{r}");
    // About six seconds, shown as m:ss.
    assert!(
        matches!(r["cells"][1].as_str(), Some("0:05" | "0:06" | "0:07")),
        "{r}"
    );
    assert!(
        r["mp4"].as_str().unwrap().ends_with("/recording.mp4"),
        "{r}"
    );
    server.stop().await;
}

/// GETs `url` with `bearer` until its JSON satisfies `ok` (20 s at most).
async fn poll_json(url: &str, bearer: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = request("GET", url, &[("authorization", bearer)]).await;
        let v: Value = serde_json::from_str(&r.text()).unwrap_or(Value::Null);
        if ok(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url}: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
