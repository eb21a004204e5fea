//! The real `streamd` binary for the load benches: started on port 0 of
//! the bench's server address (`net.rs`: loopback unless told otherwise)
//! with a config, its bound addresses read from its log.
#![allow(dead_code)] // each bench uses a subset

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The RTMP, SRT and HTTP listeners of a running streamd.
pub struct Streamd {
    pub child: Child,
    pub pid: u32,
    pub rtmp: String,
    pub srt: String,
    pub http: String,
}

/// Starts streamd with `extra` appended to a config that puts RTMP, HTTP
/// and (unless `extra` has a `[webrtc]` table) WebRTC on port 0 of the
/// bench's server address,
/// lets any name publish, and keeps its database in `dir`.
pub async fn start(dir: &Path, extra: &str) -> Streamd {
    let config = dir.join("streamd.toml");
    let ip = crate::net::server_ip();
    let mut webrtc = if extra.contains("[webrtc]") {
        String::new()
    } else {
        format!("[webrtc]\nudp_listen = \"{ip}:0\"\ntcp_listen = \"{ip}:0\"\n")
    };
    if !extra.contains("[whip]") {
        webrtc.push_str(&format!("[whip]\nudp_listen = \"{ip}:0\"\n"));
    }
    if !extra.contains("[srt]") {
        webrtc.push_str(&format!("[srt]\nlisten = \"{ip}:0\"\n"));
    }
    // Open publishing (the load runs pick their stream names), and the
    // database in the run's directory.
    let state = format!(
        "[auth]\npublish = \"open\"\n[database]\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    std::fs::write(
        &config,
        format!("[rtmp]\nlisten = \"{ip}:0\"\n[http]\nlisten = \"{ip}:0\"\n{webrtc}{state}{extra}"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamd"));
    crate::net::server_side(&mut cmd);
    // STREAMD_BENCH_ENV="K=V;K2=V2" sets variables for the server alone,
    // for profiling it in place (a heaptrack LD_PRELOAD, MALLOC_ARENA_MAX:
    // those need the binary built with `--features system-alloc`, as it
    // otherwise allocates with jemalloc) while the figures still come from
    // its own pid.
    for kv in std::env::var("STREAMD_BENCH_ENV")
        .unwrap_or_default()
        .split(';')
    {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("streamd binary");
    let pid = child.id().expect("a running child has a pid");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut rtmp, mut http, mut srt) = (None, None, None);
    while rtmp.is_none() || http.is_none() {
        let line = lines.next_line().await.unwrap().expect("streamd exited");
        for (what, slot) in [
            ("rtmp listening", &mut rtmp),
            ("http listening", &mut http),
            ("srt listening", &mut srt),
        ] {
            if line.contains(what)
                && let Some(a) = line.split("addr=").nth(1)
            {
                *slot = a.split_whitespace().next().map(str::to_owned);
            }
        }
    }
    // Keep draining the log so streamd never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Streamd {
        child,
        pid,
        rtmp: rtmp.unwrap(),
        // Logged before RTMP's, when on.
        srt: srt.unwrap_or_default(),
        http: http.unwrap(),
    }
}

/// Clock ticks per second, for /proc CPU times.
pub async fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().await.ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// An ffmpeg publisher reading a 30 fps `testsrc2` picture of `size` in
/// real time (`-re`) with the glass-to-glass clock drawn on it, and with
/// `audio` the clock's click track at that sample rate (both mapped; see
/// tests/common/clock.rs), quiet, its output killed with the handle; the
/// caller adds the encoding and the output, and no further input.
pub fn test_pattern(size: &str, audio: Option<u32>) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    match audio {
        Some(rate) => cmd.args(crate::clock::source_args(size, rate)),
        None => cmd
            .args(["-re", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-vf", &crate::clock::video_filter()]),
    };
    cmd.stdout(Stdio::null()).kill_on_drop(true);
    cmd
}

/// The test pattern published to `url` as constant-bitrate H.264 at
/// `kbps` (x264 ultrafast, zerolatency, no B-frames, a keyframe every 2 s),
/// video only, for `seconds` or until killed.
pub fn publish_cbr(url: &str, size: &str, kbps: u32, seconds: Option<u32>) -> Child {
    publish_cbr_gop(url, size, kbps, seconds, 60)
}

/// [`publish_cbr`] with a keyframe every `gop` frames (30 fps).
pub fn publish_cbr_gop(url: &str, size: &str, kbps: u32, seconds: Option<u32>, gop: u32) -> Child {
    publish_cbr_with(url, size, kbps, seconds, gop, None)
}

/// [`publish_cbr_gop`], with 128 kbps AAC at `audio` Hz (the test clock's
/// sound) when it is given.
pub fn publish_cbr_with(
    url: &str,
    size: &str,
    kbps: u32,
    seconds: Option<u32>,
    gop: u32,
    audio: Option<u32>,
) -> Child {
    let rate = format!("{kbps}k");
    let mut cmd = test_pattern(size, audio);
    if let Some(s) = seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    cmd.args([
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
    ])
    .args(["-bf", "0", "-pix_fmt", "yuv420p", "-g", &gop.to_string()])
    .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate]);
    if audio.is_some() {
        cmd.args(["-c:a", "aac", "-b:a", "128k"]);
    }
    cmd.args(["-f", "flv", url])
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}
