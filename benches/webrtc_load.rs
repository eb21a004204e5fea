//! WebRTC fan-out load tool: N viewers against the real `streamd` binary.
//!
//! Each viewer is a str0m client on its own UDP socket that speaks OME's
//! signalling and does the real ICE, DTLS and SRTP key exchange, then
//! receives the media. To keep the load generator cheap (it shares the two
//! cores with the server), media packets are counted from their RTP
//! headers (in the clear in SRTP) and not decrypted; STUN, DTLS and RTCP
//! still go through str0m, so consent checks keep the sessions alive.
//!
//! `cargo bench --bench webrtc_load` ramps viewers on one 600 kbps and one
//! 2.5 Mbps rendition (the source passed through, no B-frames, video only)
//! and prints, per step: server CPU seconds per viewer-second, egress
//! Mbit/s, server RSS per viewer, and packet loss seen by the viewers. The
//! ramp stops when loss passes 1% or delivery falls below 95% of the
//! published rate: the step before it is the ceiling. After each step, one
//! more viewer that decodes (aiortc) reads the glass-to-glass clock from
//! the picture for 8 s while the load keeps going. Each step also reports
//! how long its viewers took to join (from the start of signalling to the
//! end of their first whole video frame).
//!
//! The same viewers then load Janus (benches/common/janus.rs), fed the same
//! encoding over RTP, through its own HTTP API; the run ends with streamd's
//! figures against Janus's at each count both reached.
//!
//! `WEBRTC_LOAD_STEPS=400,800` ramps through those counts only, and
//! `WEBRTC_LOAD_SECONDS=30` measures each step that long (8 s by default).
//! `WEBRTC_LOAD_ONLY=janus` (or `streamd`) runs one side only,
//! `WEBRTC_LOAD_RENDITION=abr` (or `720p`) the renditions so named (a
//! whole name, `600 kbps 360p`, that one alone), and
//! `WEBRTC_LOAD_JANUS=LOOPS,HELPERS` gives Janus other thread counts, and
//! `WEBRTC_LOAD_THREADS=2` runs the load viewers on two threads (one by
//! default).
//!
//! The load generator (viewers, probe, publisher) runs in a network
//! namespace of its own, across a veth pair from the server, so that each
//! side pays for its own receive path (benches/common/net.rs; root,
//! iproute2 and ethtool). `WEBRTC_LOAD_NET=loopback` runs both on
//! loopback, as the runs before 2026-12-03 did: there the server's CPU
//! figure also holds the kernel's delivery of every datagram to the load
//! generator's sockets.
//!
//! Besides its figures, each step says how much CPU the kernel's softirq
//! threads took (`softirqd`, cores: network work deferred there is charged
//! to neither side), how many datagrams streamd dropped because its socket
//! was full (`streamd_webrtc_send_dropped_total`), and how many video
//! packets came out of order (late, not lost: a receiver's jitter buffer
//! takes them; the veth path reorders about one in 100,000, loopback none).
//!
//! Run by `cargo test` (no `--bench`), it is a smoke run: 4 viewers, 2 s.

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/janus.rs"]
mod janus;
#[path = "common/net.rs"]
mod net;
#[path = "common/probe.rs"]
mod probe;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;
#[path = "common/viewer.rs"]
mod viewer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::process::Command;

struct Rendition {
    name: &'static str,
    size: &'static str,
    kbps: u32,
    /// Viewers on automatic ABR: the stream is transcoded into this
    /// rendition and a small one below it, so every viewer runs str0m's
    /// bandwidth estimation (TWCC) and pacer. Otherwise the source is
    /// passed through as the one rendition and viewers have no estimator.
    abr: bool,
}

/// The server under load.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    Streamd,
    /// The baseline: Janus's streaming plugin, fed the same encoding over
    /// RTP (benches/common/janus.rs).
    Janus,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Streamd => "streamd",
            Server::Janus => "Janus",
        }
    }
}

/// What one step measured.
struct Step {
    viewers: u64,
    cpu_per_viewer_s: f64,
    rss_per_viewer_kb: f64,
    delivered: f64,
    /// Join to first whole frame, p50 and p95 in ms, of the viewers that
    /// joined in this step.
    join: (u32, u32),
    /// The end of their DTLS handshake to that frame, p50 and p95 in ms.
    start: (u32, u32),
}

/// What a ramp measured: the steps served without loss, and when a step
/// was not, the last one that was (0: none).
struct Ramp {
    steps: Vec<Step>,
    ceiling: Option<u64>,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Before any thread exists: the namespace is the calling thread's.
    let veth = std::env::var("WEBRTC_LOAD_NET").map_or(true, |v| v != "loopback");
    if veth {
        net::setup_veth();
    }
    // WEBRTC_LOAD_THREADS=2 runs the load viewers on two threads; by
    // default they share one, so their handshakes at a join are done in turn.
    let threads: usize = std::env::var("WEBRTC_LOAD_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut builder = if threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = builder.enable_all().build().unwrap();
    let renditions = [
        Rendition {
            name: "600 kbps 360p",
            size: "640x360",
            kbps: 600,
            abr: false,
        },
        Rendition {
            name: "600 kbps 360p, automatic ABR (bandwidth estimation)",
            size: "640x360",
            kbps: 600,
            abr: true,
        },
        Rendition {
            name: "2.5 Mbps 720p",
            size: "1280x720",
            kbps: 2500,
            abr: false,
        },
    ];
    if full {
        // WEBRTC_LOAD_STEPS=400,800 runs only those counts.
        let steps: Vec<usize> = std::env::var("WEBRTC_LOAD_STEPS")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![50, 200, 400, 800, 1200, 1600, 2000, 2500]);
        let seconds = std::env::var("WEBRTC_LOAD_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8);
        // WEBRTC_LOAD_ONLY=janus (or streamd) runs one side.
        let only = std::env::var("WEBRTC_LOAD_ONLY").unwrap_or_default();
        let wanted = |s: Server| only.is_empty() || only.eq_ignore_ascii_case(s.name());
        // WEBRTC_LOAD_RENDITION=ABR runs the renditions whose name has it.
        let rendition = std::env::var("WEBRTC_LOAD_RENDITION")
            .unwrap_or_default()
            .to_lowercase();
        // A name given whole picks that rendition alone.
        let exact = renditions
            .iter()
            .any(|r| r.name.to_lowercase() == rendition);
        for r in renditions.iter().filter(|r| {
            let name = r.name.to_lowercase();
            if exact {
                name == rendition
            } else {
                name.contains(&rendition)
            }
        }) {
            let ours = wanted(Server::Streamd)
                .then(|| rt.block_on(ramp(Server::Streamd, r, &steps, seconds, false)));
            // Janus's streaming plugin has no ABR: it is the baseline of
            // the one-rendition runs.
            let theirs = (wanted(Server::Janus) && !r.abr)
                .then(|| rt.block_on(ramp(Server::Janus, r, &steps, seconds, false)));
            if let (Some(ours), Some(theirs)) = (ours, theirs) {
                compare(r, &ours, &theirs);
            }
        }
    } else {
        let smoke = Rendition {
            name: "smoke 160x120",
            size: "160x120",
            kbps: 200,
            abr: false,
        };
        let ours = rt.block_on(ramp(Server::Streamd, &smoke, &[4], 2, true));
        let theirs = rt.block_on(ramp(Server::Janus, &smoke, &[4], 2, true));
        compare(&smoke, &ours, &theirs);
    }
    net::teardown();
}

/// Side by side, at the counts both ramps measured: server CPU per
/// viewer-second, RSS per viewer and join time, each as streamd's figure
/// against Janus's, and the ceilings.
fn compare(r: &Rendition, ours: &Ramp, theirs: &Ramp) {
    println!(
        "\n== {}: streamd against Janus, same encoding, same viewers ==",
        r.name
    );
    println!(
        "{:>7} {:>28} {:>28} {:>20} {:>22} {:>26}",
        "viewers",
        "cpu s/viewer-s (x Janus)",
        "RSS/viewer kB (x Janus)",
        "delivered (Janus)",
        "join p95 ms (Janus)",
        "DTLS→frame p95 ms (Janus)"
    );
    for a in &ours.steps {
        let Some(b) = theirs.steps.iter().find(|b| b.viewers == a.viewers) else {
            continue;
        };
        println!(
            "{:>7} {:>17.6} ({:>5.2}x) {:>17.1} ({:>5.2}x) {:>11.0}% ({:>4.0}%) {:>13} ({:>6}) {:>17} ({:>6})",
            a.viewers,
            a.cpu_per_viewer_s,
            a.cpu_per_viewer_s / b.cpu_per_viewer_s,
            a.rss_per_viewer_kb,
            a.rss_per_viewer_kb / b.rss_per_viewer_kb,
            a.delivered * 100.0,
            b.delivered * 100.0,
            a.join.1,
            b.join.1,
            a.start.1,
            b.start.1,
        );
    }
    let show = |c: Option<u64>| c.map_or("not reached".to_owned(), |c| format!("{c} viewers"));
    println!(
        "        ceiling (the most viewers served without loss): streamd {}, Janus {}",
        show(ours.ceiling),
        show(theirs.ceiling)
    );
}

/// p50 and p95 of `v` (0 when empty).
fn percentiles(mut v: Vec<u32>) -> (u32, u32) {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    (at(0.5), at(0.95))
}

/// One viewer of `server` at `at` until `stop`.
async fn view(
    server: Server,
    at: &str,
    seen: Arc<viewer::Seen>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    match server {
        Server::Streamd => viewer::viewer(at, seen, stop, Arc::new(AtomicBool::new(true))).await,
        Server::Janus => {
            let started = Instant::now();
            // Janus answers `start` at once and reports its errors on a
            // long-poll no longer read: a viewer not playing within the
            // ramp's wait counts as not connected (reported per step).
            let (offer, session) = tokio::time::timeout(Duration::from_secs(30), janus::offer(at))
                .await
                .map_err(|_| "no offer from Janus in 30 s".to_string())??;
            let (peer, answer) = viewer::Peer::accept(&offer, started).await?;
            session.answer(&answer).await?;
            peer.receive(&seen, &stop, &AtomicBool::new(true), || {})
                .await
        }
    }
}

/// `smoke`: assert what a full run reports (see below).
async fn ramp(server: Server, r: &Rendition, steps: &[usize], seconds: u64, smoke: bool) -> Ramp {
    let dir = tempfile::tempdir().unwrap();
    // streamd: the source passed through (no ladder: the fan-out is what
    // is measured), or for ABR two cheap rungs; WebRTC on loopback port 0.
    // Janus: a fixed pool of two media threads (one per core, not a thread
    // per viewer) and two helper threads sharing the fan-out, the set-up
    // that served the most viewers here.
    let (mut child, pid, mut publisher, at, metrics) = match server {
        Server::Streamd => {
            let transcode = if r.abr {
                format!(
                    "[transcode]\nenabled = true\nopus = false\n\
                     [[transcode.ladder]]\nname = \"top\"\nwidth = 640\nheight = 360\nbitrate_kbps = {}\npreset = \"ultrafast\"\n\
                     [[transcode.ladder]]\nname = \"low\"\nwidth = 160\nheight = 90\nbitrate_kbps = 150\npreset = \"ultrafast\"\n",
                    r.kbps
                )
            } else {
                "[transcode]\nenabled = false\n".to_owned()
            };
            let s = streamd::start(
                dir.path(),
                &format!(
                    "{transcode}[whip]\nenabled = false\n[webrtc]\nudp_listen = \"{ip}:0\"\ntcp_listen = \"{ip}:0\"\n\
                     max_viewers = 100000\nstart_bitrate_kbps = {}\n\
                     # Every load viewer comes from one address and joins 50 at a time.\n\
                     max_pending_offers_per_ip = 100000\n",
                    r.kbps + 400,
                    ip = net::server_ip(),
                ),
            )
            .await;
            let publisher = streamd::publish_cbr(
                &format!("rtmp://{}/live/load", s.rtmp),
                r.size,
                r.kbps,
                Some(900),
            );
            wait_ready(&format!("http://{}/live/load/llhls.m3u8", s.http)).await;
            (
                s.child,
                s.pid,
                publisher,
                format!("ws://{}/live/load", s.http),
                Some(format!("http://{}/metrics", s.http)),
            )
        }
        Server::Janus => {
            // WEBRTC_LOAD_JANUS=LOOPS,HELPERS tries another set-up.
            let (loops, helpers) = std::env::var("WEBRTC_LOAD_JANUS")
                .ok()
                .and_then(|v| {
                    let (a, b) = v.split_once(',')?;
                    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
                })
                .unwrap_or((2, 2));
            let j = janus::start(dir.path(), loops, helpers).await;
            let publisher = janus::publish_rtp(j.video_port, r.size, r.kbps, Some(900));
            // The mountpoint has video once the encoder's first packets
            // arrive; a viewer that joins before gets no offer.
            tokio::time::sleep(Duration::from_secs(2)).await;
            (j.child, j.pid, publisher, j.http, None)
        }
    };
    let ticks = streamd::clock_ticks().await;
    let totals = Arc::new(viewer::Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut viewers = 0;
    let mut ramp = Ramp {
        steps: Vec::new(),
        ceiling: None,
    };
    println!(
        "\n== {}: {} ({}) ==",
        server.name(),
        r.name,
        if net::veth() {
            "veth pair; each side charged its own receive path"
        } else {
            "loopback; the server's CPU holds the viewers' receive path"
        }
    );
    println!(
        "{:>7} {:>16} {:>7} {:>9} {:>12} {:>14} {:>13} {:>10} {:>10} {:>12} {:>16} {:>18}",
        "viewers",
        "cpu s/viewer-s",
        "kernel",
        "softirqd",
        "egress Mb/s",
        "RSS/viewer kB",
        "added kB/vwr",
        "loss %",
        "delivered",
        "loadgen cpu",
        "join p50/p95 ms",
        "DTLS→frame p50/p95"
    );
    let rss_base = proc::status_kb(pid, "VmRSS:");
    // The RSS and viewers of the step before: the RSS each step's new
    // viewers added, which leaves out what the server holds whatever the
    // count (its LL-HLS window, the probe's session, allocator arenas).
    let mut before: Option<(u64, u64)> = None;
    // What the server spends with no viewer (ingest, and the encoders in
    // the ABR run) is not fan-out: measured first, subtracted below.
    // Its CPU: the process's, and on the veth pair the kernel thread that
    // receives for it (net.rs).
    let server_cpu = || {
        let (user, system) = proc::cpu_ticks_split(pid);
        (user, system + net::server_rx_ticks())
    };
    let idle0 = server_cpu();
    let idle_t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle1 = server_cpu();
    let idle = (idle1.0 + idle1.1 - idle0.0 - idle0.1) / ticks / idle_t.elapsed().as_secs_f64();
    println!("   idle {:>16.3} cores (subtracted)", idle);
    // Glass to glass with no load viewer: what the publisher, the server
    // and the player take; each step's figure against it is what the load
    // adds.
    let unloaded = if !smoke && server == Server::Streamd {
        let g = probe::aiortc_glass(&at, 8).await;
        println!(
            "        glass to glass with no load (aiortc, 8 s): p50 {} ms, p99 {} ms",
            g["p50_ms"], g["p99_ms"]
        );
        Some(g)
    } else {
        None
    };
    for &target in steps {
        while viewers < target {
            let (at, totals, stop) = (at.clone(), totals.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = view(server, &at, totals.clone(), stop).await
                    && totals.failed.fetch_add(1, Ordering::Relaxed) == 0
                {
                    println!("        (a viewer failed: {e})");
                }
            });
            viewers += 1;
            if viewers % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Let every viewer connect and reach a keyframe.
        let deadline = Instant::now() + Duration::from_secs(30);
        while (totals.connected.load(Ordering::Relaxed) + totals.failed.load(Ordering::Relaxed))
            < viewers as u64
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let join = percentiles(std::mem::take(&mut *totals.joins.lock().unwrap()));
        let start = percentiles(std::mem::take(&mut *totals.starts.lock().unwrap()));
        let (p0, b0, l0, late0) = (
            totals.packets.load(Ordering::Relaxed),
            totals.bytes.load(Ordering::Relaxed),
            totals.lost.load(Ordering::Relaxed),
            totals.late.load(Ordering::Relaxed),
        );
        let (user0, system0) = server_cpu();
        let gen_cpu_ticks = || proc::cpu_ticks("self") + net::client_rx_ticks();
        let gen0 = gen_cpu_ticks();
        let softirqd0 = net::softirqd_ticks();
        let send_dropped0 = send_dropped(metrics.as_deref()).await;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (user1, system1) = server_cpu();
        let cpu = ((user1 + system1 - user0 - system0) / ticks - idle * secs).max(0.0);
        // The kernel's share of the server's whole CPU in the window (idle
        // included): sends and receives, and on loopback the viewers'
        // receive path too.
        let kernel = (system1 - system0) / (user1 + system1 - user0 - system0).max(1.0);
        let gen_cpu = (gen_cpu_ticks() - gen0) / ticks / secs;
        // Deferred network work, charged to neither side (cores).
        let softirqd = (net::softirqd_ticks() - softirqd0) / ticks / secs;
        let packets = totals.packets.load(Ordering::Relaxed) - p0;
        let bytes = totals.bytes.load(Ordering::Relaxed) - b0;
        // A packet that came late (reordered) is not lost.
        let late = totals.late.load(Ordering::Relaxed) - late0;
        let lost = (totals.lost.load(Ordering::Relaxed) - l0).saturating_sub(late);
        let connected = totals.connected.load(Ordering::Relaxed);
        // No figures from a run where nobody watched or nothing arrived.
        assert!(
            connected > 0 && packets > 0,
            "{}: {connected} viewers connected and {packets} packets arrived at step {target}: no figures",
            server.name()
        );
        let rss = proc::status_kb(pid, "VmRSS:");
        let loss = 100.0 * lost as f64 / (packets + lost).max(1) as f64;
        let egress = bytes as f64 * 8.0 / secs / 1e6;
        let expected = f64::from(r.kbps) / 1000.0 * connected as f64;
        let delivered = egress / expected;
        let step = Step {
            viewers: connected,
            cpu_per_viewer_s: cpu / (connected as f64 * secs),
            rss_per_viewer_kb: rss.saturating_sub(rss_base) as f64 / connected as f64,
            delivered,
            join,
            start,
        };
        let added = match before {
            Some((rss0, n0)) if connected > n0 => {
                format!(
                    "{:.1}",
                    (rss as f64 - rss0 as f64) / (connected - n0) as f64
                )
            }
            _ => "-".to_owned(),
        };
        before = Some((rss, connected));
        println!(
            "{:>7} {:>16.6} {:>6.0}% {:>9.3} {:>12.1} {:>14.1} {:>13} {:>10.3} {:>9.0}% {:>11.0}% {:>16} {:>18}",
            connected,
            step.cpu_per_viewer_s,
            kernel * 100.0,
            softirqd,
            egress,
            step.rss_per_viewer_kb,
            added,
            loss,
            delivered * 100.0,
            gen_cpu * 100.0,
            format!("{} / {}", join.0, join.1),
            format!("{} / {}", start.0, start.1),
        );
        // Datagrams streamd itself dropped in the window because its
        // socket's send buffer was full (a loss the viewers see).
        let dropped = send_dropped(metrics.as_deref()).await - send_dropped0;
        if late > 0 {
            println!("        ({late} video packets came out of order: late, not lost)");
        }
        if dropped > 0.0 {
            println!(
                "        (streamd dropped {dropped:.0} sends: its socket's send buffer was full)"
            );
        }
        let failed = totals.failed.load(Ordering::Relaxed);
        if failed > 0 {
            println!("        ({failed} viewers failed to connect)");
        }
        // Join times cover only viewers that got a frame.
        let waiting = (viewers as u64).saturating_sub(connected + failed);
        if waiting > 0 {
            println!("        ({waiting} viewers still without video: not in the join figures)");
        }
        let past_ceiling = loss > 1.0 || delivered < 0.95;
        if let Some(base) = unloaded.as_ref().filter(|_| !past_ceiling) {
            // One more viewer that decodes (aiortc), after the measured
            // window, while the others keep watching: how old what it
            // shows is, from the clock in the picture, and how much older
            // than with no load. A probe that cannot keep up on a full
            // machine gives no figure, and the run goes on.
            let probe = tokio::spawn({
                let at = at.clone();
                async move { probe::aiortc_glass(&at, 8).await }
            });
            match probe.await {
                Err(e) => println!(
                    "        glass to glass at {connected} viewers: the probe failed ({e}); no figure"
                ),
                Ok(g) => {
                    let added =
                        |k: &str| g[k].as_i64().unwrap_or(0) - base[k].as_i64().unwrap_or(0);
                    println!(
                        "        glass to glass at {connected} viewers (aiortc, 8 s): p50 {} ms, p95 {} ms, p99 {} ms; \
                 added by the load: p50 {} ms, p99 {} ms",
                        g["p50_ms"],
                        g["p95_ms"],
                        g["p99_ms"],
                        added("p50_ms"),
                        added("p99_ms")
                    );
                }
            }
        }
        if smoke {
            // The smoke run (in the test command) asserts what the full
            // run only reports: every viewer connected, media was
            // delivered at the published rate, nothing was lost, and every
            // viewer's join was timed.
            let s = server.name();
            assert_eq!(failed, 0, "{s}: viewers failed to connect");
            assert_eq!(connected, target as u64, "{s}: not every viewer connected");
            assert!(
                delivered >= 0.8,
                "{s}: delivered {:.0}% of the published rate",
                delivered * 100.0
            );
            assert_eq!(
                lost, 0,
                "{s}: {lost} packets lost (none can be, between two namespaces of one machine)"
            );
            assert!(join.1 > 0, "{s}: no viewer's first frame was timed");
        }
        if past_ceiling {
            // No glass-to-glass figure here: the machine is full, and a
            // probe that cannot keep up proves nothing about the server.
            // The ceiling is the last step before it.
            println!("        packets late or lost at {connected} viewers: past the ceiling");
            ramp.ceiling = Some(ramp.steps.last().map_or(0, |s| s.viewers));
            break;
        }
        ramp.steps.push(step);
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = publisher.kill().await;
    let _ = child.kill().await;
    ramp
}

/// streamd's `streamd_webrtc_send_dropped_total` from its `/metrics` (0
/// without one).
async fn send_dropped(metrics: Option<&str>) -> f64 {
    let Some(url) = metrics else { return 0.0 };
    let Ok(out) = Command::new("curl").args(["-s", url]).output().await else {
        return 0.0;
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("streamd_webrtc_send_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn wait_ready(url: &str) {
    for _ in 0..200 {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", url])
            .output()
            .await;
        if out.is_ok_and(|o| o.stdout == b"200") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready");
}
