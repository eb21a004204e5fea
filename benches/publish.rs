//! The ways in, side by side in one run of the real binary: the same
//! publisher (FFmpeg 9 from the tests' virtualenv, the clocked 720p test
//! pattern, x264 veryfast zerolatency, 2.5 Mbps, 1 s GOP, no B-frames)
//! sends over RTMP (FLV, AAC), WHIP (Opus) and SRT (MPEG-TS, AAC, 120 ms
//! latency), in turn (RTMP, WHIP, SRT, RTMP, WHIP, SRT), to a streamd that
//! does not transcode. RTMP is the baseline the others are ratios to.
//!
//! For each: streamd's CPU per second of publishing (nothing else
//! connected), then glass to glass read from the picture by aiortc (WebRTC)
//! and by hls.js in Chromium (LL-HLS). The WHIP figure includes its Opus →
//! AAC transcoder (LL-HLS and recordings need AAC); RTMP's and SRT's have
//! no audio transcoding (the ladder is off).
//!
//! `cargo bench --bench publish` writes target/publish_bench.json. Run by
//! `cargo test` (no `--bench`) it is a smoke run: one short WHIP phase and
//! one short SRT phase at 360p, which must produce every figure.

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "../tests/common/ffmpeg9.rs"]
mod ffmpeg9;
#[path = "common/http.rs"]
mod http;
#[path = "common/net.rs"]
mod net;
#[path = "common/probe.rs"]
mod probe;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ffmpeg9::ffmpeg9;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ingest {
    Rtmp,
    Whip,
    Srt,
}

fn publish(ingest: Ingest, s: &streamd::Streamd, stream: &str, size: &str) -> Child {
    let mut cmd = Command::new(ffmpeg9());
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(clock::source_args(size, 48_000))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
        ])
        .args([
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-bf",
            "0",
            "-g",
            "30",
        ])
        .args(["-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k"]);
    match ingest {
        Ingest::Rtmp => cmd
            .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv"])
            .arg(format!("rtmp://{}/live/{stream}", s.rtmp)),
        Ingest::Whip => cmd
            .args(["-c:a", "libopus", "-b:a", "128k", "-ac", "2", "-f", "whip"])
            .arg(format!("http://{}/live/{stream}/whip", s.http)),
        Ingest::Srt => cmd
            .args(["-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "mpegts"])
            .arg(format!(
                "srt://{}?streamid=live/{stream}&latency=120000&pkt_size=1316",
                s.srt
            )),
    };
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg 9")
}

struct Phase {
    ingest: Ingest,
    cpu_per_s: f64,
    webrtc: serde_json::Value,
    llhls: serde_json::Value,
}

async fn phase(
    s: &streamd::Streamd,
    ingest: Ingest,
    round: usize,
    size: &str,
    seconds: u32,
    ticks: f64,
) -> Phase {
    let stream = format!("{}{round}", format!("{ingest:?}").to_lowercase());
    let mut publisher = publish(ingest, s, &stream, size);
    let http: http::Http = Client::builder(TokioExecutor::new()).build_http();
    let master = format!("http://{}/live/{stream}/llhls.m3u8", s.http);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((200, body)) = http::get(&http, &master).await
            && String::from_utf8_lossy(&body).contains("mp4a")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ingest:?}: no LL-HLS with audio in 20 s"
        );
        assert!(
            publisher.try_wait().unwrap().is_none(),
            "{ingest:?}: ffmpeg exited"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // streamd's CPU while only the publisher is connected.
    let (c0, t0) = (proc::cpu_ticks(s.pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
    let cpu_per_s = (proc::cpu_ticks(s.pid) - c0) / ticks / t0.elapsed().as_secs_f64();
    let webrtc = probe::aiortc_glass(&format!("ws://{}/live/{stream}", s.http), seconds).await;
    let llhls = probe::hlsjs_glass(&master, seconds).await;
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "{ingest:?}: ffmpeg exited mid-run"
    );
    publisher.kill().await.ok();
    Phase {
        ingest,
        cpu_per_s,
        webrtc,
        llhls,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let s = streamd::start(
            dir.path(),
            "[whip]\nudp_listen = \"127.0.0.1:0\"\n[transcode]\nenabled = false\n[record]\nenabled = false\n",
        )
        .await;
        let ticks = streamd::clock_ticks().await;
        let (order, size, seconds): (Vec<Ingest>, &str, u32) = if full {
            (
                vec![
                    Ingest::Rtmp,
                    Ingest::Whip,
                    Ingest::Srt,
                    Ingest::Rtmp,
                    Ingest::Whip,
                    Ingest::Srt,
                ],
                "1280x720",
                15,
            )
        } else {
            (vec![Ingest::Whip, Ingest::Srt], "640x360", 5)
        };
        let mut phases = Vec::new();
        for (round, ingest) in order.into_iter().enumerate() {
            let p = phase(&s, ingest, round, size, seconds, ticks).await;
            println!(
                "{:?} round {round}: streamd CPU {:.4} s/s; WebRTC glass-to-glass p50 {} / p95 {} ms; LL-HLS p50 {} / p95 {} ms",
                p.ingest,
                p.cpu_per_s,
                p.webrtc["p50_ms"],
                p.webrtc["p95_ms"],
                p.llhls["p50_ms"],
                p.llhls["p95_ms"]
            );
            phases.push(p);
        }
        if full {
            let mean = |i: Ingest, f: &dyn Fn(&Phase) -> f64| {
                let v: Vec<f64> = phases.iter().filter(|p| p.ingest == i).map(f).collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            let cpu = |p: &Phase| p.cpu_per_s;
            let rtc = |p: &Phase| p.webrtc["p50_ms"].as_f64().unwrap_or(f64::NAN);
            let hls = |p: &Phase| p.llhls["p50_ms"].as_f64().unwrap_or(f64::NAN);
            for way in [Ingest::Whip, Ingest::Srt] {
                println!(
                    "{way:?} / RTMP: CPU {:.2}x, WebRTC p50 {:.2}x, LL-HLS p50 {:.2}x",
                    mean(way, &cpu) / mean(Ingest::Rtmp, &cpu),
                    mean(way, &rtc) / mean(Ingest::Rtmp, &rtc),
                    mean(way, &hls) / mean(Ingest::Rtmp, &hls),
                );
            }
            let json: Vec<serde_json::Value> = phases
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "ingest": format!("{:?}", p.ingest), "cpu_s_per_s": p.cpu_per_s,
                        "webrtc": p.webrtc, "llhls": p.llhls,
                    })
                })
                .collect();
            let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/publish_bench.json");
            std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        } else {
            // The smoke run: every figure is there, for each way in.
            for p in &phases {
                assert!(p.cpu_per_s > 0.0, "{:?}: no CPU measured", p.ingest);
                assert!(p.webrtc["p50_ms"].as_i64().is_some(), "{:?}: {}", p.ingest, p.webrtc);
                assert!(p.llhls["p50_ms"].as_i64().is_some(), "{:?}: {}", p.ingest, p.llhls);
            }
        }
    });
}
