//! Soak and fault run against the real `streamd` binary: one publish,
//! WebRTC viewers and LL-HLS players for a long time, then the publisher
//! killed with -9 and back within the reconnect grace.
//!
//! `cargo bench --bench soak` runs 1 publish (640x360, 600 kbps), 100
//! WebRTC viewers and 50 LL-HLS players (blocking playlist reloads, every
//! part fetched) for an hour, plus a WebRTC viewer that stops reading its
//! socket and an HTTP client that requests a segment and never reads it.
//! Every sample (60 s) it prints streamd's RSS and open file descriptors,
//! and what the viewers and players received. At the end:
//! - RSS drift from the end of the warm-up (the first tenth) to the end,
//!   and fd growth (goals: under 5%, none);
//! - viewer and player failures (goal: none);
//! - the fault: the publisher killed with -9 and restarted at once. Every
//!   reading viewer and player must get media again without reconnecting
//!   or reloading; the longest video gap a viewer saw is reported.
//!
//! Flags (after `--`): `--seconds N`, `--webrtc N`, `--llhls N`,
//! `--sample N` (seconds between samples). Run by `cargo test` (no
//! `--bench`), it is a smoke run (16 s, 3 + 3, the fault included) that
//! fails unless every viewer and player got media before and after the
//! fault.

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/http.rs"]
mod http;
#[path = "common/net.rs"]
mod net;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;
#[path = "common/viewer.rs"]
mod viewer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Http, get, preload_hint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use viewer::Seen;

struct Plan {
    full: bool,
    seconds: u64,
    webrtc: usize,
    llhls: usize,
    sample: u64,
}

impl Played {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.kinds.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// An error's kind: its status, or what failed.
fn kind(r: &Result<(u16, Bytes), String>, what: &str) -> String {
    match r {
        Ok((status, body)) => format!(
            "{what} {status} {}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        ),
        Err(e) => format!("{what}: {e:.80}"),
    }
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let flag = |name: &str, default: u64| -> u64 {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1)?.parse().ok())
                .unwrap_or(default)
        };
        let (seconds, webrtc, llhls, sample) = if full {
            (3600, 100, 50, 60)
        } else {
            (16, 3, 3, 2)
        };
        Plan {
            full,
            seconds: flag("--seconds", seconds),
            webrtc: flag("--webrtc", webrtc as u64) as usize,
            llhls: flag("--llhls", llhls as u64) as usize,
            sample: flag("--sample", sample).max(1),
        }
    }
}

/// What one LL-HLS player got.
#[derive(Default)]
struct Played {
    parts: AtomicU64,
    errors: AtomicU64,
    /// What the errors were (status code or transport error), counted.
    kinds: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Parts fetched since the fault.
    since_mark: AtomicU64,
    /// The longest time between two new parts, in ms.
    max_gap_ms: AtomicU64,
}

fn main() {
    let plan = Plan::from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(run(plan));
    if !ok {
        eprintln!("soak run failed (see above): no figures");
        std::process::exit(1);
    }
}

/// An LL-HLS player: blocking reloads for the hinted part, and every part
/// fetched, until `stop`. It never reloads from scratch: after an error it
/// asks for the same playlist again.
async fn player(
    http: Http,
    base: String,
    media: String,
    played: Arc<Played>,
    stop: Arc<AtomicBool>,
) {
    let mut next: Option<String> = None;
    let mut last_part: Option<Instant> = None;
    let mut last_uri = String::new();
    while !stop.load(Ordering::Relaxed) {
        let url = match &next {
            Some(q) => format!("{base}/{media}?{q}"),
            None => format!("{base}/{media}"),
        };
        let text = match get(&http, &url).await {
            Ok((200, body)) => String::from_utf8_lossy(&body).into_owned(),
            other => {
                played.error(kind(&other, "playlist"));
                next = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // The newest part listed: fetch it if it is new.
        if let Some(uri) = text
            .lines()
            .rfind(|l| l.starts_with("#EXT-X-PART:"))
            .and_then(|l| l.split("URI=\"").nth(1)?.split('"').next())
            && uri != last_uri
        {
            match get(&http, &format!("{base}/{uri}")).await {
                Ok((200, _)) => {
                    let now = Instant::now();
                    if let Some(t) = last_part {
                        let ms = now.duration_since(t).as_millis() as u64;
                        played.max_gap_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                    last_part = Some(now);
                    played.parts.fetch_add(1, Ordering::Relaxed);
                    played.since_mark.fetch_add(1, Ordering::Relaxed);
                    last_uri = uri.to_owned();
                }
                other => played.error(kind(&other, "part")),
            }
        }
        next = preload_hint(&text).map(|(query, _)| query);
    }
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

async fn run(plan: Plan) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let streamd::Streamd {
        child: mut server,
        pid,
        rtmp,
        http,
        ..
    } = streamd::start(
        dir.path(),
        // The source passed through: a soak of ingest, packaging and
        // fan-out, not of the encoders. Every viewer comes from 127.0.0.1.
        "[transcode]\nenabled = false\n[whip]\nudp_listen = \"127.0.0.1:0\"\n[webrtc]\nudp_listen = \"127.0.0.1:0\"\n\
         tcp_listen = \"127.0.0.1:0\"\nmax_pending_offers_per_ip = 100000\n",
    )
    .await;
    let rtmp_url = format!("rtmp://{rtmp}/live/soak");
    let mut publisher = streamd::publish_cbr(&rtmp_url, "640x360", 600, None);
    let base = format!("http://{http}/live/soak");
    // Idle connections are dropped before streamd's 10 s idle deadline
    // closes them (a request sent on a connection the server is closing
    // fails: browsers retry it, this client would count an error).
    let client: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(plan.llhls + 4)
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http();
    let mut media = None;
    for _ in 0..200 {
        if let Ok((200, body)) = get(&client, &format!("{base}/llhls.m3u8")).await {
            media = String::from_utf8_lossy(&body)
                .lines()
                .find(|l| l.starts_with("video_") && l.ends_with(".m3u8"))
                .map(str::to_owned);
            if media.is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(media) = media else {
        eprintln!("the stream never became ready");
        return false;
    };
    let stop = Arc::new(AtomicBool::new(false));

    // The viewers and players, and the two that stop reading.
    let ws = format!("ws://{http}/live/soak");
    let mut viewers = Vec::new();
    for _ in 0..plan.webrtc {
        let seen = Arc::new(Seen::default());
        let (ws, seen2, stop) = (ws.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let reading = Arc::new(AtomicBool::new(true));
            if let Err(e) = viewer::viewer(&ws, seen2.clone(), stop, reading).await {
                eprintln!("viewer failed: {e}");
                seen2.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
        viewers.push(seen);
    }
    let hung = Arc::new(AtomicBool::new(true));
    {
        let (ws, stop, hung) = (ws.clone(), stop.clone(), hung.clone());
        tokio::spawn(async move {
            let _ = viewer::viewer(&ws, Arc::new(Seen::default()), stop, hung).await;
        });
    }
    let mut players = Vec::new();
    for _ in 0..plan.llhls {
        let played = Arc::new(Played::default());
        tokio::spawn(player(
            client.clone(),
            base.clone(),
            media.clone(),
            played.clone(),
            stop.clone(),
        ));
        players.push(played);
    }
    // An HTTP client that asks for a segment and never reads the answer.
    let mut unread = tokio::net::TcpStream::connect(&http).await.unwrap();
    let seg = media.replace(".m3u8", "_0.m4s");
    unread
        .write_all(format!("GET /live/soak/{seg} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();

    println!(
        "\n== soak: 1 publish, {} WebRTC viewers, {} LL-HLS players, {} s ==",
        plan.webrtc, plan.llhls, plan.seconds
    );
    println!(
        "{:>7} {:>10} {:>5} {:>10} {:>10} {:>10} {:>10}",
        "t (s)", "RSS kB", "fds", "viewers", "pkts/s", "parts/s", "failures"
    );
    let started = Instant::now();
    let warmup = Duration::from_secs((plan.seconds / 10).max(plan.sample));
    let mut warm: Option<(u64, usize)> = None;
    let mut last = (0u64, 0usize);
    let (mut p0, mut parts0) = (0u64, 0u64);
    let sum = |f: &dyn Fn(&Seen) -> u64| viewers.iter().map(|v| f(v)).sum::<u64>();
    let failures = || {
        viewers
            .iter()
            .map(|v| v.failed.load(Ordering::Relaxed))
            .sum::<u64>()
            + players
                .iter()
                .map(|p| p.errors.load(Ordering::Relaxed))
                .sum::<u64>()
    };
    while started.elapsed() < Duration::from_secs(plan.seconds) {
        tokio::time::sleep(Duration::from_secs(plan.sample)).await;
        if started.elapsed() > Duration::from_secs(plan.sample) {
            // The hung viewer stops reading after the first sample.
            hung.store(false, Ordering::Relaxed);
        }
        let rss = proc::status_kb(pid, "VmRSS:");
        let fds = fd_count(pid);
        let packets = sum(&|v| v.packets.load(Ordering::Relaxed));
        let parts: u64 = players
            .iter()
            .map(|p| p.parts.load(Ordering::Relaxed))
            .sum();
        println!(
            "{:>7} {:>10} {:>5} {:>10} {:>10.0} {:>10.1} {:>10}",
            started.elapsed().as_secs(),
            rss,
            fds,
            sum(&|v| v.connected.load(Ordering::Relaxed)),
            (packets - p0) as f64 / plan.sample as f64,
            (parts - parts0) as f64 / plan.sample as f64,
            failures(),
        );
        (p0, parts0) = (packets, parts);
        last = (rss, fds);
        if warm.is_none() && started.elapsed() >= warmup {
            warm = Some(last);
        }
    }

    // The fault: the publisher killed with -9 and back at once.
    for v in &viewers {
        v.mark();
    }
    for p in &players {
        p.since_mark.store(0, Ordering::Relaxed);
        p.max_gap_ms.store(0, Ordering::Relaxed);
    }
    for v in &viewers {
        v.max_gap_ms.store(0, Ordering::Relaxed);
    }
    let _ = publisher.kill().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut publisher = streamd::publish_cbr(&rtmp_url, "640x360", 600, None);
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    let after_fault = killed.elapsed();

    let connected = sum(&|v| v.connected.load(Ordering::Relaxed));
    let resumed = viewers
        .iter()
        .filter(|v| v.since_mark.load(Ordering::Relaxed) > 0)
        .count();
    let players_resumed = players
        .iter()
        .filter(|p| p.since_mark.load(Ordering::Relaxed) > 0)
        .count();
    let max_gap = viewers
        .iter()
        .map(|v| v.max_gap_ms.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let max_part_gap = players
        .iter()
        .map(|p| p.max_gap_ms.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let failed = failures();
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    for p in &players {
        for (k, n) in p.kinds.lock().unwrap().iter() {
            *kinds.entry(k.clone()).or_default() += n;
        }
    }
    let total_parts: u64 = players
        .iter()
        .map(|p| p.parts.load(Ordering::Relaxed))
        .sum();
    let _ = publisher.kill().await;
    let alive = server.try_wait().ok().flatten().is_none();
    let _ = server.kill().await;

    let mut ok = alive;
    if !alive {
        println!("streamd exited during the run");
    }
    let Some((rss0, fds0)) = warm else {
        println!("no sample after the warm-up");
        return false;
    };
    println!(
        "RSS {rss0} kB after warm-up, {} kB at the end: drift {:+.1}% (goal < 5%)",
        last.0,
        100.0 * (last.0 as f64 - rss0 as f64) / rss0.max(1) as f64
    );
    println!(
        "fds {fds0} after warm-up, {} at the end: {:+} (goal: no growth)",
        last.1,
        last.1 as i64 - fds0 as i64
    );
    println!("failures (viewers that failed, player errors): {failed} (goal 0)");
    for (k, n) in kinds {
        println!("  {n} x {k}");
    }
    println!(
        "fault (publisher killed -9, back after 1 s; {:.1} s observed): {resumed}/{} viewers \
         and {players_resumed}/{} players got media again without reconnecting; longest \
         video gap {max_gap} ms, longest gap between parts {max_part_gap} ms",
        after_fault.as_secs_f64(),
        viewers.len(),
        players.len()
    );
    // A run that measured nothing reports nothing.
    if connected < plan.webrtc as u64 || total_parts == 0 || rss0 == 0 || fds0 == 0 {
        println!(
            "the run did not happen: {connected}/{} viewers connected, {total_parts} parts",
            plan.webrtc
        );
        ok = false;
    }
    if resumed < viewers.len() || players_resumed < players.len() {
        println!("not every viewer and player came back after the fault");
        ok = false;
    }
    if !plan.full && failed > 0 {
        ok = false;
    }
    ok
}
