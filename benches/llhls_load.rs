//! LL-HLS load run against the real `streamd` binary, side by side with a
//! baseline origin: nginx serving ffmpeg's own (standard) HLS output of the
//! same publish.
//!
//! `cargo bench --bench llhls_load` measures, with one 720p publish:
//! - ingest-to-part latency (RTMP tag arrival to its part being servable),
//!   p50/p99, and how fast held playlist requests wake once their part
//!   exists (from streamd's /metrics);
//! - glass-to-glass latency, p50/p95 over 20 s, read from the clock the
//!   publisher draws into every picture (tests/common/clock.rs), not from
//!   anything the server stamps: hls.js in headless Chromium on streamd's
//!   LL-HLS and on the baseline's HLS, and aiortc on streamd's WebRTC
//!   (with what PROGRAM-DATE-TIME would have said, for comparison);
//! - memory (RSS) and CPU with 200 concurrent blocking playlist clients on
//!   streamd, and 200 clients polling the baseline.
//!
//! Needs nginx (`apt-get install nginx-light`), ffmpeg, Chromium and the
//! npm tools in tests/browser, and the aiortc virtualenv in tests/python.
//! Run by `cargo test` (no `--bench`), it does a short smoke run against
//! streamd only: 6 s probes and the client loop.

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/http.rs"]
mod http;
#[path = "common/nginx.rs"]
mod nginx;
use nginx::free_port;
#[path = "common/net.rs"]
mod net;
#[path = "common/probe.rs"]
mod probe;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Http, get, preload_hint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::Child;

struct Plan {
    full: bool,
    clients: usize,
    seconds: u64,
    size: &'static str,
    bitrate: &'static str,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            full,
            clients: 200,
            seconds: 20,
            size: "1280x720",
            bitrate: "2500k",
        }
    } else {
        Plan {
            full,
            clients: 10,
            seconds: 3,
            size: "160x120",
            bitrate: "200k",
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(plan));
}

/// Resident memory (kB) and CPU time (s) of the processes `pids`.
fn usage(pids: &[u32], ticks_per_sec: f64) -> (u64, f64) {
    let rss = pids.iter().map(|pid| proc::status_kb(pid, "VmRSS:")).sum();
    let cpu = pids.iter().map(proc::cpu_ticks).sum::<f64>() / ticks_per_sec;
    (rss, cpu)
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    errors: AtomicU64,
}

struct Sampled {
    rss_before_kb: u64,
    rss_peak_kb: u64,
    rss_avg_kb: u64,
    cpu_s: f64,
}

/// Runs `load` while sampling the processes' memory and CPU.
async fn sampled<F: std::future::Future<Output = ()>>(pids: Vec<u32>, load: F) -> Sampled {
    let ticks = streamd::clock_ticks().await;
    let (rss_before_kb, cpu0) = usage(&pids, ticks);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut samples = vec![];
            while !stop.load(Ordering::Relaxed) {
                samples.push(usage(&pids, ticks).0);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            samples
        })
    };
    load.await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let (_, cpu1) = usage(&pids, ticks);
    Sampled {
        rss_before_kb,
        rss_peak_kb: samples.iter().copied().max().unwrap_or(0),
        rss_avg_kb: samples.iter().sum::<u64>() / samples.len().max(1) as u64,
        cpu_s: cpu1 - cpu0,
    }
}

/// An LL-HLS player's playlist loop: blocking reloads for the part after the
/// newest one, forever until `until`.
async fn llhls_client(http: Http, playlist: String, until: Instant, stats: Arc<LoadStats>) {
    let mut next: Option<String> = None;
    while Instant::now() < until {
        let url = match &next {
            Some(q) => format!("{playlist}?{q}"),
            None => playlist.clone(),
        };
        match get(&http, &url).await {
            Ok((200, body)) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                let text = String::from_utf8_lossy(&body);
                next = preload_hint(&text).map(|(query, _)| query);
            }
            _ => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                next = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A standard HLS player's loop: reload every half target duration.
async fn polling_client(http: Http, playlist: String, until: Instant, stats: Arc<LoadStats>) {
    while Instant::now() < until {
        match get(&http, &playlist).await {
            Ok((200, _)) => stats.ok.fetch_add(1, Ordering::Relaxed),
            _ => stats.errors.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_clients<F, Fut>(n: usize, seconds: u64, make: F) -> (u64, u64)
where
    F: Fn(Http, Instant, Arc<LoadStats>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build_http();
    let stats = Arc::new(LoadStats::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(make(http.clone(), until, stats.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (
        stats.ok.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed),
    )
}

/// The value of `name{quantile="q"}` in Prometheus text.
fn quantile(metrics: &str, name: &str, q: &str) -> Option<f64> {
    let key = format!("{name}{{quantile=\"{q}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
}

/// nginx (one worker) serving `root`, uncached: the baseline origin.
fn start_nginx(dir: &Path, root: &Path) -> (Child, u16) {
    let port = free_port();
    let http = format!(
        "  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n    \
         location / {{ add_header Cache-Control no-cache; add_header Access-Control-Allow-Origin *; }}\n  }}",
        root = root.display(),
    );
    (nginx::start(dir, 1, &http), port)
}

fn publish(rtmp: &str, hls_dir: Option<&PathBuf>, plan: &Plan) -> Child {
    let url = format!("rtmp://{rtmp}/live/load");
    let out = match hls_dir {
        Some(d) => format!(
            "[f=flv]{url}|[f=hls:hls_time=1:hls_list_size=10:hls_segment_type=fmp4:hls_flags=delete_segments+program_date_time+independent_segments]{}/index.m3u8",
            d.display()
        ),
        None => format!("[f=flv]{url}"),
    };
    // x264 without lookahead or B-frames (zerolatency, as a low-latency
    // OBS set-up and OME's WebRTC advice have it): the encoder's own delay
    // stays out of the way of the servers', and the WebRTC probe can play
    // the source passed through.
    streamd::test_pattern(plan.size, Some(48000))
        .args([
            "-t",
            "600",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-b:v",
            plan.bitrate,
            "-maxrate",
            plan.bitrate,
            "-bufsize",
            plan.bitrate,
        ])
        .args([
            "-g",
            "30",
            "-keyint_min",
            "30",
            "-sc_threshold",
            "0",
            "-flags:v",
            "+global_header",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-flags:a", "+global_header"])
        .args(["-f", "tee", &out])
        .spawn()
        .expect("ffmpeg")
}

async fn wait_ok(http: &Http, url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok((200, _)) = get(http, url).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} not ready");
}

async fn run(plan: Plan) {
    let dir = std::env::temp_dir().join(format!("streamd-load-{}", std::process::id()));
    let hls_dir = dir.join("hls");
    std::fs::create_dir_all(&hls_dir).unwrap();
    let http: Http = Client::builder(TokioExecutor::new()).build_http();

    let streamd::Streamd {
        child: streamd,
        rtmp,
        http: http_addr,
        ..
    } = streamd::start(&dir, "[transcode]\nenabled = false\n").await;
    let streamd_pid = streamd.id().unwrap();
    let nginx = if plan.full {
        Some(start_nginx(&dir, &hls_dir))
    } else {
        None
    };
    let _publisher = publish(&rtmp, plan.full.then_some(&hls_dir), &plan);
    let master = format!("http://{http_addr}/live/load/llhls.m3u8");
    wait_ok(&http, &master, Duration::from_secs(20)).await;
    let (_, body) = get(&http, &master).await.unwrap();
    let video = String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("video_"))
        .unwrap()
        .to_owned();
    let playlist = format!("http://{http_addr}/live/load/{video}");
    let baseline = nginx
        .as_ref()
        .map(|(_, port)| format!("http://127.0.0.1:{port}/index.m3u8"));
    if let Some(b) = &baseline {
        wait_ok(&http, b, Duration::from_secs(20)).await;
    }
    // Let both origins fill their playlists.
    tokio::time::sleep(Duration::from_secs(if plan.full { 8 } else { 1 })).await;

    let mut report =
        serde_json::json!({ "publish": format!("{} {} 30 fps, 1 s GOP", plan.size, plan.bitrate) });
    // Glass to glass, one probe at a time, from the clock the publisher
    // draws into the picture: streamd's LL-HLS and WebRTC, and the
    // baseline's HLS of the same encode.
    let probe = if plan.full { 20 } else { 6 };
    let mut glass = serde_json::json!({
        "streamd_llhls_hlsjs": probe::hlsjs_glass(&master, probe).await,
        "streamd_webrtc_aiortc": probe::aiortc_glass(&format!("ws://{http_addr}/live/load"), probe).await,
    });
    if let Some(b) = &baseline {
        glass["baseline_ffmpeg_hls_nginx_hlsjs"] = probe::hlsjs_glass(b, probe).await;
        let p50 = |k: &str| glass[k]["p50_ms"].as_f64().unwrap();
        glass["p50_ratio_baseline_over_streamd_llhls"] =
            serde_json::json!(p50("baseline_ffmpeg_hls_nginx_hlsjs") / p50("streamd_llhls_hlsjs"));
    }
    report["glass_to_glass"] = glass;

    let clients = plan.clients;
    let seconds = plan.seconds;
    let pl = playlist.clone();
    let mut result = (0, 0);
    let load = sampled(vec![streamd_pid], async {
        result = run_clients(clients, seconds, move |h, until, stats| {
            llhls_client(h, pl.clone(), until, stats)
        })
        .await;
    })
    .await;
    report["streamd_blocking_clients"] = serde_json::json!({
        "clients": clients, "seconds": seconds, "responses_ok": result.0, "errors": result.1,
        "rss_before_mb": load.rss_before_kb as f64 / 1024.0, "rss_peak_mb": load.rss_peak_kb as f64 / 1024.0,
        "rss_avg_mb": load.rss_avg_kb as f64 / 1024.0, "cpu_seconds": load.cpu_s,
        "rss_per_client_kb": (load.rss_peak_kb.saturating_sub(load.rss_before_kb)) as f64 / clients as f64,
    });
    assert!(result.0 > 0, "no successful playlist responses");
    assert_eq!(result.1, 0, "playlist requests failed under load");

    if let (Some((nginx, _)), Some(b)) = (&nginx, &baseline) {
        let pids = children_of(nginx.id().unwrap());
        let b = b.clone();
        let mut base_result = (0, 0);
        let base = sampled(pids, async {
            base_result = run_clients(clients, seconds, move |h, until, stats| {
                polling_client(h, b.clone(), until, stats)
            })
            .await;
        })
        .await;
        report["baseline_polling_clients"] = serde_json::json!({
            "clients": clients, "seconds": seconds, "responses_ok": base_result.0, "errors": base_result.1,
            "rss_before_mb": base.rss_before_kb as f64 / 1024.0, "rss_peak_mb": base.rss_peak_kb as f64 / 1024.0,
            "cpu_seconds": base.cpu_s,
        });
        report["rss_peak_ratio_streamd_over_nginx"] =
            serde_json::json!(load.rss_peak_kb as f64 / base.rss_peak_kb.max(1) as f64);
    }

    let (_, metrics) = get(&http, &format!("http://{http_addr}/metrics"))
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    let q = |name: &str, q: &str| quantile(&metrics, name, q).map(|v| (v * 1e4).round() / 10.0);
    report["ingest_to_part_ms"] = serde_json::json!({
        "p50": q("streamd_llhls_ingest_to_part_seconds", "0.5"),
        "p99": q("streamd_llhls_ingest_to_part_seconds", "0.99"),
        "max": q("streamd_llhls_ingest_to_part_seconds", "1"),
    });
    report["blocking_wake_ms"] = serde_json::json!({
        "p50": q("streamd_llhls_blocking_wake_seconds", "0.5"),
        "p99": q("streamd_llhls_blocking_wake_seconds", "0.99"),
    });
    if let Some((n, _)) = nginx {
        nginx::stop(n).await;
    }
    let text = serde_json::to_string_pretty(&report).unwrap();
    println!("{text}");
    if plan.full {
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/llhls_load.json");
        std::fs::write(&out, &text).unwrap();
        println!("written to {}", out.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
