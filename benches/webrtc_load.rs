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
//! published rate: that step's count is the ceiling. After each step, one
//! more viewer that decodes (aiortc) reads the glass-to-glass clock from
//! the picture for 8 s while the load keeps going.
//!
//! `WEBRTC_LOAD_STEPS=400,800` ramps through those counts only, and
//! `WEBRTC_LOAD_SECONDS=30` measures each step that long (8 s by default).
//!
//! Run by `cargo test` (no `--bench`), it is a smoke run: 4 viewers, 2 s.

#[path = "../tests/common/clock.rs"]
mod clock;
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

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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
        for r in &renditions {
            rt.block_on(ramp(r, &steps, seconds, false));
        }
    } else {
        rt.block_on(ramp(
            &Rendition {
                name: "smoke 160x120",
                size: "160x120",
                kbps: 200,
                abr: false,
            },
            &[4],
            2,
            true,
        ));
    }
}

/// `smoke`: assert what a full run reports (see below).
async fn ramp(r: &Rendition, steps: &[usize], seconds: u64, smoke: bool) {
    let dir = tempfile::tempdir().unwrap();
    // The source passed through (no ladder: the fan-out is what is
    // measured), or for ABR two cheap rungs; WebRTC on loopback port 0.
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
    let streamd::Streamd {
        child: mut server,
        pid,
        rtmp,
        http,
        ..
    } = streamd::start(
        dir.path(),
        &format!(
            "{transcode}[whip]\nenabled = false\n[webrtc]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\n\
             max_viewers = 100000\nstart_bitrate_kbps = {}\n\
             # Every load viewer comes from 127.0.0.1 and joins 50 at a time.\n\
             max_pending_offers_per_ip = 100000\n",
            r.kbps + 400
        ),
    )
    .await;
    let mut publisher = streamd::publish_cbr(
        &format!("rtmp://{rtmp}/live/load"),
        r.size,
        r.kbps,
        Some(900),
    );
    let ws = format!("ws://{http}/live/load");
    wait_ready(&format!("http://{http}/live/load/llhls.m3u8")).await;
    let ticks = streamd::clock_ticks().await;
    let totals = Arc::new(viewer::Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut viewers = 0;
    println!("\n== {} ==", r.name);
    println!(
        "{:>7} {:>16} {:>12} {:>14} {:>10} {:>10} {:>12}",
        "viewers",
        "cpu s/viewer-s",
        "egress Mb/s",
        "RSS/viewer kB",
        "loss %",
        "delivered",
        "loadgen cpu"
    );
    let rss_base = proc::status_kb(pid, "VmRSS:");
    // What the server spends with no viewer (ingest, and the encoders in
    // the ABR run) is not fan-out: measured first, subtracted below.
    let idle0 = proc::cpu_ticks(pid);
    let idle_t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = (proc::cpu_ticks(pid) - idle0) / ticks / idle_t.elapsed().as_secs_f64();
    println!("   idle {:>16.3} cores (subtracted)", idle);
    for &target in steps {
        while viewers < target {
            let (ws, totals, stop) = (ws.clone(), totals.clone(), stop.clone());
            let reading = Arc::new(AtomicBool::new(true));
            tokio::spawn(async move {
                if viewer::viewer(&ws, totals.clone(), stop, reading)
                    .await
                    .is_err()
                {
                    totals.failed.fetch_add(1, Ordering::Relaxed);
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
        let (p0, b0, l0) = (
            totals.packets.load(Ordering::Relaxed),
            totals.bytes.load(Ordering::Relaxed),
            totals.lost.load(Ordering::Relaxed),
        );
        let cpu0 = proc::cpu_ticks(pid);
        let gen0 = proc::cpu_ticks("self");
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = ((proc::cpu_ticks(pid) - cpu0) / ticks - idle * secs).max(0.0);
        let gen_cpu = (proc::cpu_ticks("self") - gen0) / ticks / secs;
        let packets = totals.packets.load(Ordering::Relaxed) - p0;
        let bytes = totals.bytes.load(Ordering::Relaxed) - b0;
        let lost = totals.lost.load(Ordering::Relaxed) - l0;
        let connected = totals.connected.load(Ordering::Relaxed);
        // No figures from a run where nobody watched or nothing arrived.
        assert!(
            connected > 0 && packets > 0,
            "{connected} viewers connected and {packets} packets arrived at step {target}: no figures"
        );
        let rss = proc::status_kb(pid, "VmRSS:");
        let loss = 100.0 * lost as f64 / (packets + lost).max(1) as f64;
        let egress = bytes as f64 * 8.0 / secs / 1e6;
        let expected = f64::from(r.kbps) / 1000.0 * connected as f64;
        let delivered = egress / expected;
        println!(
            "{:>7} {:>16.6} {:>12.1} {:>14.1} {:>10.3} {:>9.0}% {:>11.0}%",
            connected,
            cpu / (connected as f64 * secs),
            egress,
            rss.saturating_sub(rss_base) as f64 / connected as f64,
            loss,
            delivered * 100.0,
            gen_cpu * 100.0,
        );
        let failed = totals.failed.load(Ordering::Relaxed);
        if failed > 0 {
            println!("        ({failed} viewers failed to connect)");
        }
        if !smoke {
            // One more viewer that decodes (aiortc), after the measured
            // window, while the others keep watching: how old what it
            // shows is, from the clock in the picture.
            let g = probe::aiortc_glass(&ws, 8).await;
            println!(
                "        glass to glass at {connected} viewers (aiortc, 8 s): p50 {} ms, p95 {} ms",
                g["p50_ms"], g["p95_ms"]
            );
        }
        if smoke {
            // The smoke run (in the test command) asserts what the full
            // run only reports: every viewer connected, media was
            // delivered at the published rate, nothing was lost.
            assert_eq!(failed, 0, "viewers failed to connect");
            assert_eq!(connected, target as u64, "not every viewer connected");
            assert!(
                delivered >= 0.8,
                "delivered {:.0}% of the published rate",
                delivered * 100.0
            );
            assert_eq!(lost, 0, "{lost} packets lost on loopback");
        }
        if loss > 1.0 || delivered < 0.95 {
            println!("        ceiling: packets late or lost at {connected} viewers");
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = publisher.kill().await;
    let _ = server.kill().await;
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
