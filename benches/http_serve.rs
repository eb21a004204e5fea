//! Serving speed beside nginx: the same bytes, the same load, alternated.
//!
//! streamd packages a 720p 2.5 Mbps publish with 128 kbps AAC; one
//! complete LL-HLS video part (~100 KB), one complete video segment
//! (~700 KB) and one audio part (a few KB: per-request cost is nearly all
//! of it) it serves are saved to files nginx serves. Then each load runs against streamd and nginx in turn
//! (A B A B, `ROUNDS` pairs) and the requests per second are compared pair
//! by pair:
//! - HTTP/1.1, plain: `wrk -t2 -c64`;
//! - HTTP/1.1 over TLS: `wrk -t2 -c64` on https;
//! - HTTP/2 over TLS: `h2load -c64 -m1` (one stream per connection at a
//!   time, as a player makes its requests).
//!
//! Both servers get the machine's two cores (nginx `worker_processes 2`,
//! streamd's two HTTP workers, `http.workers`); the load tool shares them. The
//! publisher is stopped before the load (the stream waits in its
//! reconnect grace, still served), so no encoder competes.
//!
//! A response that is not 200 with the expected length, or a load tool
//! that fails, ends the run with no figures. Results: target/http_serve.json.
//!
//! Needs wrk, h2load (apt nghttp2-client), nginx (nginx-light) and ffmpeg.
//!
//!   cargo bench --bench http_serve
//!   HTTP_SERVE_ONLY=audio_part_https_h2 HTTP_SERVE_ROUNDS=7 cargo bench --bench http_serve

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/nginx.rs"]
mod nginx;
use nginx::free_port;
#[path = "common/net.rs"]
mod net;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;

use std::path::Path;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A self-signed certificate for `localhost`, for both servers.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// nginx serving `root` over HTTP and over HTTPS with HTTP/2, as the bench
/// compares them; its two ports.
fn start_nginx(dir: &Path, root: &Path, cert: &Path, key: &Path) -> (Child, u16, u16) {
    let (port, tls) = (free_port(), free_port());
    let http = format!(
        "  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 1000000;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    listen 127.0.0.1:{tls} ssl http2;\n    \
         ssl_certificate {cert};\n    ssl_certificate_key {key};\n    root {root};\n    \
         location / {{ add_header Cache-Control \"max-age=60\"; add_header Access-Control-Allow-Origin *; }}\n  }}",
        root = root.display(),
        cert = cert.display(),
        key = key.display(),
    );
    (nginx::start(dir, 2, &http), port, tls)
}

/// GET `url` with curl (-k: the bench's own certificate); the body.
async fn fetch(url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sk", "--fail", "--max-time", "10", url])
        .output()
        .await
        .expect("curl");
    assert!(out.status.success(), "GET {url} failed");
    out.stdout
}

/// What a load run measured.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
}

/// Runs the load tool for `seconds` against `url`; the requests per second,
/// or None (with the reason printed) if it failed or saw errors.
async fn load(tool: &str, url: &str, seconds: u64) -> Option<Run> {
    let d = format!("{seconds}s");
    let out = match tool {
        "wrk" => Command::new("wrk")
            .args(["-t2", "-c64", "-d", &d, "--latency", url])
            .output()
            .await
            .expect("wrk (apt-get install wrk)"),
        _ => Command::new("h2load")
            .args(["-c64", "-m1", "-t2", "-D", &seconds.to_string(), url])
            .output()
            .await
            .expect("h2load (apt-get install nghttp2-client)"),
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!(
            "{tool} {url} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    match tool {
        "wrk" => {
            if text.contains("Non-2xx") || text.contains("Socket errors") {
                eprintln!("{tool} {url} saw errors:\n{text}");
                return None;
            }
            let rps = text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))?
                .trim()
                .parse()
                .ok()?;
            Some(Run { rps })
        }
        _ => {
            // "requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored"
            let line = text.lines().find(|l| l.starts_with("requests:"))?;
            if !line.contains(" 0 failed, 0 errored") {
                eprintln!("{tool} {url} saw errors:\n{text}");
                return None;
            }
            let status = text.lines().find(|l| l.starts_with("status codes:"))?;
            if !status.contains(" 0 3xx, 0 4xx, 0 5xx") {
                eprintln!("{tool} {url} saw non-2xx answers:\n{text}");
                return None;
            }
            // "finished in 5.00s, 12345.60 req/s, 700.00MB/s"
            let rps = text
                .lines()
                .find(|l| l.starts_with("finished in"))?
                .split(", ")
                .nth(1)?
                .strip_suffix(" req/s")?
                .parse()
                .ok()?;
            Some(Run { rps })
        }
    }
}

/// Once `playlist` lists three complete segments: its first complete
/// segment and the first part of a complete segment.
async fn complete(base: &str, playlist: &str) -> (String, String) {
    loop {
        let text =
            String::from_utf8_lossy(&fetch(&format!("{base}/{playlist}")).await).into_owned();
        let segments: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        // Parts of complete segments are listed before their segment line.
        let parts: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
            .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
            .collect();
        if segments.len() >= 3 && !parts.is_empty() {
            return (segments[0].to_owned(), parts[0].to_owned());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes --bench: the measured run. Without it (the test
    // suite's smoke run) every load runs once, briefly.
    let (rounds, seconds) = if std::env::args().any(|a| a == "--bench") {
        // HTTP_SERVE_ROUNDS=7: more pairs, for a ratio near 1.
        let rounds = std::env::var("HTTP_SERVE_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        (rounds, 5)
    } else {
        (1, 1)
    };
    // HTTP_SERVE_ONLY=audio_part_https_h2 (a substring of the keys):
    // only those loads, as when profiling one of them.
    let only = std::env::var("HTTP_SERVE_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let https_port = free_port();
    let server = streamd::start(
        dir.path(),
        &format!(
            "[webrtc]\nenabled = false\n[transcode]\nenabled = false\n[record]\nenabled = false\n\
             [bus]\nreconnect_grace = \"10m\"\n[llhls]\nsegments_kept = 1000\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\nlisten = \"127.0.0.1:{https_port}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .await;
    // 720p 2.5 Mbps video and 128 kbps AAC (its parts are the smallest
    // responses a player fetches, where per-request cost is nearly all).
    let mut publisher = streamd::publish_cbr_with(
        &format!("rtmp://{}/live/serve", server.rtmp),
        "1280x720",
        2500,
        None,
        60,
        Some(48_000),
    );
    // Wait for three complete segments, then take the first complete one
    // and a part of the newest complete segment.
    let base = format!("http://{}/live/serve", server.http);
    let master = loop {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("{base}/llhls.m3u8")])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("#EXTM3U") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let video = master
        .lines()
        .find(|l| l.starts_with("video") && l.ends_with(".m3u8"))
        .or_else(|| {
            master
                .lines()
                .find(|l| !l.starts_with('#') && l.contains("video"))
        })
        .expect("a video playlist")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let audio = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-MEDIA:") && l.contains("TYPE=AUDIO"))
        .find_map(|l| l.split("URI=\"").nth(1)?.split(['"', '?']).next())
        .expect("an audio playlist")
        .to_owned();
    let (segment, part) = complete(&base, &video).await;
    let (_, audio_part) = complete(&base, &audio).await;
    let _ = publisher.kill().await;
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let (nginx, port, tls_port) = start_nginx(dir.path(), &root, &cert, &key);
    let mut files = Vec::new();
    for (what, name) in [
        ("audio_part", &audio_part),
        ("part", &part),
        ("segment", &segment),
    ] {
        let body = fetch(&format!("{base}/{name}")).await;
        std::fs::write(root.join(name), &body).unwrap();
        files.push((what, name.clone(), body.len()));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Same bytes from both.
    for (_, name, len) in &files {
        for url in [
            format!("http://127.0.0.1:{port}/{name}"),
            format!("https://localhost:{tls_port}/{name}"),
            format!("https://localhost:{https_port}/live/serve/{name}"),
        ] {
            assert_eq!(fetch(&url).await.len(), *len, "{url}");
        }
    }

    let mut report = serde_json::json!({
        "machine": "2 cores, loopback; nginx worker_processes 2",
        "rounds": rounds,
        "seconds_per_run": seconds,
    });
    let mut failed = false;
    for (what, name, len) in &files {
        for (protocol, tool, ours, theirs) in [
            (
                "http1",
                "wrk",
                format!("{base}/{name}"),
                format!("http://127.0.0.1:{port}/{name}"),
            ),
            (
                "https_http1",
                "wrk",
                format!("https://localhost:{https_port}/live/serve/{name}"),
                format!("https://localhost:{tls_port}/{name}"),
            ),
            (
                "https_h2",
                "h2load",
                format!("https://localhost:{https_port}/live/serve/{name}"),
                format!("https://localhost:{tls_port}/{name}"),
            ),
        ] {
            if !format!("{what}_{protocol}").contains(&only) {
                continue;
            }
            let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (Some(x), Some(y)) = (
                    load(tool, &ours, seconds).await,
                    load(tool, &theirs, seconds).await,
                ) else {
                    failed = true;
                    break;
                };
                a.push(x.rps);
                b.push(y.rps);
                ratios.push(x.rps / y.rps);
            }
            if a.len() < rounds {
                continue;
            }
            let key = format!("{what}_{protocol}");
            println!(
                "{key:<22} {len:>7} B  streamd {:>9.0} req/s  nginx {:>9.0} req/s  ratio {:.2} (pairs {:?})",
                median(a.clone()),
                median(b.clone()),
                median(ratios.clone()),
                ratios
                    .iter()
                    .map(|r| (r * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            );
            report[key] = serde_json::json!({
                "bytes": len,
                "streamd_rps": median(a),
                "nginx_rps": median(b),
                "ratio": median(ratios.clone()),
                "pair_ratios": ratios,
            });
        }
    }
    nginx::stop(nginx).await;
    drop(server);
    if failed {
        eprintln!("a load run failed: no figures reported");
        std::process::exit(1);
    }
    if rounds == 1 {
        println!("smoke run: figures not written (cargo bench --bench http_serve measures)");
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/http_serve.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("written to {}", out.display());
}
