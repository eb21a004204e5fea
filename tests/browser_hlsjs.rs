//! hls.js, in headless Chromium, plays a stream published by ffmpeg.
//!
//! Needs Chromium and the npm packages in tests/browser (the README's test
//! command installs both).

mod common;

use common::*;

/// One browser test at a time: each runs Chromium next to a publisher and a
/// server (the ladder test transcodes), and two of them on two cores starve
/// each other (a CI run saw hls.js stall behind a buffer hole it did not
/// skip while the ladder test ran beside it).
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs hlsjs.mjs on `master` with `args` (seconds, mode); its report,
/// checked by common::hlsjs.
async fn play(master: &str, args: &[&str]) -> serde_json::Value {
    play_with_env(master, args, &[]).await
}

async fn play_with_env(master: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let result = hlsjs(master, args, env).await;
    eprintln!("hls.js: {result}");
    result
}

#[tokio::test]
async fn hlsjs_plays_with_low_latency() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::start(|_| {}).await;
    let publisher = server.publish("live", "browser", 60, "320x240");
    let master = server.url("/live/browser/llhls.m3u8");
    server.master_when_ready("live", "browser").await;

    let result = play(&master, &["8"]).await;
    let advanced = result["advanced"].as_f64().unwrap();
    assert!(
        advanced >= 5.0,
        "playback advanced only {advanced} s in 8 s: {result}"
    );
    assert!(result["decodedFrames"].as_u64().unwrap() > 100, "{result}");
    assert_eq!(result["audioTracks"].as_u64(), Some(1), "{result}");
    assert_eq!(result["stalls"].as_u64(), Some(0), "{result}");
    // Glass to glass, from the clock the publisher drew into the picture.
    let (p50, p95) = clock::check(&result, advanced, 5000);
    // What hls.js would have said from the server's PROGRAM-DATE-TIME,
    // beside it (reported, not trusted).
    eprintln!(
        "LL-HLS glass-to-glass: p50 {p50} ms, p95 {p95} ms; server-stamped p50 {:?} ms",
        clock::server_stamped_p50_ms(&result)
    );
    drop(publisher);
    server.stop().await;
}

/// hls.js plays the transcoded ladder and follows forced level switches
/// (as its ABR controller would make them) without an error, and at most
/// one stall it recovers from.
#[tokio::test]
async fn hlsjs_switches_between_ladder_rungs() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::start(|c| {
        c.transcode.enabled = true;
        c.transcode.ladder = [
            ("360p", 640, 360, 600),
            ("240p", 426, 240, 300),
            ("144p", 256, 144, 150),
        ]
        .into_iter()
        .map(|(n, w, h, k)| streamd::config::RungConfig {
            preset: "superfast".into(),
            ..streamd::config::RungConfig::new(n, w, h, k)
        })
        .collect();
    })
    .await;
    let publisher = server.publish("live", "abr", 60, "640x360");
    let master = server.url("/live/abr/llhls.m3u8");
    server.master_when_ready("live", "abr").await;

    let result = play(&master, &["12", "switch"]).await;
    let heights: Vec<u64> = result["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["height"].as_u64().unwrap())
        .collect();
    // hls.js orders levels by bandwidth, lowest first.
    assert_eq!(heights, vec![144, 240, 360], "{result}");
    let mut switched: Vec<u64> = result["switched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    switched.sort();
    switched.dedup();
    assert_eq!(switched, vec![0, 1, 2], "every level was played: {result}");
    assert!(result["advanced"].as_f64().unwrap() >= 10.0, "{result}");
    // One stall is let through, and reported: in 1 of 6 to 8 runs (with
    // three or six target durations of parts listed alike) hls.js 1.7.4
    // stops loading one track at the first segment boundary after a forced
    // switch (the next part listed, its audio controller idle for a second
    // or so; or a video part marked loaded and missing from the buffer)
    // and then carries on. Not yet pinned down; see benches/README.md.
    let stalls = result["stalls"].as_u64().unwrap();
    eprintln!("hls.js stalls while switching: {stalls}");
    assert!(stalls <= 1, "{result}");
    // The clock reads on every rung, 144p included, and never goes back
    // across a switch.
    let (p50, p95) = clock::check(&result, 10.0, 5000);
    eprintln!("LL-HLS ladder glass-to-glass: p50 {p50} ms, p95 {p95} ms");
    drop(publisher);
    server.stop().await;
}

/// hls.js plays LL-HLS over HTTPS with a certificate the test made, and
/// every request to streamd goes over HTTP/2 (ALPN h2), as Safari's native
/// LL-HLS wants it.
#[tokio::test]
async fn hlsjs_plays_over_https_and_http2() {
    let _one = ONE_BROWSER.lock().await;
    let certs = tempfile::tempdir().unwrap();
    let cert = tls::make_cert(certs.path(), "player", tls::in_a_month());
    let server = TestServer::start(|c| {
        c.tls.cert = cert.cert.clone();
        c.tls.key = cert.key.clone();
        c.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
        // A player that takes its responses is never taken for one that
        // stalls them, even at a send timeout far below the default.
        c.http.send_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let publisher = server.publish("live", "tls", 60, "320x240");
    server.master_when_ready("live", "tls").await;
    let master = format!(
        "https://localhost:{}/live/tls/llhls.m3u8",
        server.https.unwrap().port()
    );
    let result = play_with_env(
        &master,
        &["8"],
        &[("CHROMIUM_TRUST_SPKI", &cert.spki_sha256)],
    )
    .await;
    assert!(result["advanced"].as_f64().unwrap() >= 5.0, "{result}");
    // No stall, unless hls.js 1.7.4's loader got stuck and the page's
    // watchdog had to free it (reported above): one CI run had the stuck
    // part leave a 167 ms hole in the buffer, and two stalls at it.
    let stalls = result["stalls"].as_u64().unwrap();
    let unstuck = result["unstuck"].as_array().map_or(0, Vec::len);
    if unstuck == 0 {
        assert_eq!(stalls, 0, "{result}");
    } else {
        eprintln!("hls.js stalls after its loader was unstuck: {stalls}");
        assert!(stalls <= 2, "{result}");
    }
    let protocols = result["protocols"].as_object().unwrap();
    let h2 = protocols.get("h2").and_then(|n| n.as_u64()).unwrap_or(0);
    // Playlists (blocking reloads), parts and the init segments.
    assert!(h2 >= 20, "{result}");
    assert_eq!(protocols.len(), 1, "every request over h2: {protocols:?}");
    assert_eq!(
        server.metric("streamd_http2_send_stalls_total").await,
        0.0,
        "a playing hls.js's connection was closed as stalled"
    );
    drop(publisher);
    server.stop().await;
}
