//! Glass-to-glass probes for the load benches: a real player on the
//! stream for a while, the age of what it shows read from the clock the
//! publisher draws into the picture (tests/common/clock.rs). A probe that
//! does not play, or whose clock does not read, fails the bench: it gives
//! no figures.
#![allow(dead_code)] // each bench uses a subset

use std::path::Path;

use tokio::process::Command;

use crate::clock;

/// The last line of a probe's stdout, as JSON; a probe that printed none
/// fails the run.
fn probe_report(what: &str, out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{what} gave no report: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Glass to glass on `url` for `seconds`, read by hls.js in Chromium from
/// the clock in the picture; beside it, what hls.js would have said from
/// the server's PROGRAM-DATE-TIME. A run that did not play fails the bench:
/// it gives no figures.
pub async fn hlsjs_glass(url: &str, seconds: u32) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/hlsjs.mjs");
    let out = Command::new("node")
        .arg(script)
        .arg(url)
        .arg(seconds.to_string())
        .output()
        .await
        .expect("node (see README)");
    let v = probe_report("hls.js", &out);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
    let advanced = v["advanced"].as_f64().unwrap_or(0.0);
    let (p50, p95) = clock::check(&v, advanced, 30_000);
    serde_json::json!({
        "p50_ms": p50, "p95_ms": p95, "stalls": v["stalls"],
        "program_date_time_p50_ms": clock::server_stamped_p50_ms(&v),
    })
}

/// Glass to glass over WebRTC on `ws` for `seconds`, read by aiortc (an
/// independent WebRTC stack) from the clock in each decoded picture.
pub async fn aiortc_glass(ws: &str, seconds: u32) -> serde_json::Value {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let out = Command::new(tests.join("python/.venv/bin/python"))
        .arg(tests.join("python/aiortc_viewer.py"))
        .arg(ws)
        .env("STREAMD_VIEWER_IP", crate::net::client_ip())
        .arg(seconds.to_string())
        .output()
        .await
        .expect("the aiortc virtualenv in tests/python/.venv (see README)");
    let v = probe_report("aiortc", &out);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(0), "{v}");
    let (p50, p95) = clock::check(&v, f64::from(seconds) - 2.0, 30_000);
    let mut ages: Vec<i64> = v["clock"]["agesMs"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_i64).collect())
        .unwrap_or_default();
    ages.sort_unstable();
    let p99 = ages[((ages.len() * 99).div_ceil(100)).saturating_sub(1)];
    serde_json::json!({
        "p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "video_frames": v["video_frames"],
    })
}
