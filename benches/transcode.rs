//! Transcoding throughput: streamd's ladder (decode once, every rung on its
//! own thread) against the ffmpeg CLI running the same ladder (one decode,
//! `split` + `scale` in a filter graph, the same libx264 settings), on the
//! same file, in one run. Both run as fast as they can (no `-re`), video
//! only, and are reported as x realtime, CPU seconds per media second and
//! peak RSS.
//!
//! An HEVC source (Enhanced RTMP's `hvc1`, as OBS and FFmpeg 9 publish it)
//! goes through the same comparison: streamd reads the FLV, the CLI reads
//! the same HEVC bitstream from MP4 (Debian's FFmpeg 5.1 predates Enhanced
//! RTMP), and both decode it with the same libavcodec.
//!
//! Then: how many 720p sources one machine transcodes at once in real
//! time (each through the default ladder: 720p, 480p, 360p).
//!
//! `cargo bench --bench transcode` runs it all (1080p30 inputs, about two
//! minutes). Without `--bench` (as `cargo test` runs it) it is a smoke run
//! on a tiny input that checks both sides produce every frame.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use streamd::bus::{
    BroadcastConsumer, Registry, Retention, StartAt, StreamPath, TrackEvent, TryNext,
};
use streamd::config::{RungConfig, TranscodeConfig};
use streamd::ingest::tags::{Arrival, TagIngest};
use streamd::transcode::OfflineLadder;

#[path = "../tests/common/ffmpeg9.rs"]
mod ffmpeg9;
#[path = "common/flv.rs"]
mod flv;
#[path = "common/proc.rs"]
mod proc;

fn read_flv(path: &Path) -> Vec<flv::Tag> {
    flv::read_tags(path).0
}

/// A test input, made once and kept in target/.
fn input(name: &str, size: &str, seconds: u32, noisy: bool) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(format!("bench-transcode-{name}.flv"));
    if !path.exists() {
        let vf = if noisy {
            "noise=alls=20:allf=t"
        } else {
            "null"
        };
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-t", &seconds.to_string(), "-vf", vf])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "8000k"])
            .args(["-g", "60", "-pix_fmt", "yuv420p", "-f", "flv"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg could not make {}", path.display());
    }
    path
}

/// An HEVC test input, made once and kept in target/: FFmpeg 9's libx265
/// (B-frames, as OBS sends) in MP4 for the CLI, and the same packets in
/// Enhanced RTMP's FLV for streamd. Returns (flv, mp4).
fn hevc_input(name: &str, size: &str, seconds: u32) -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let mp4 = dir.join(format!("bench-transcode-{name}.mp4"));
    let flv = dir.join(format!("bench-transcode-{name}.flv"));
    if !flv.exists() {
        let ok = Command::new(ffmpeg9::ffmpeg9())
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args(["-t", &seconds.to_string()])
            .args(["-c:v", "libx265", "-preset", "ultrafast", "-b:v", "6000k"])
            .args(["-x265-params", "log-level=error:keyint=60:bframes=2"])
            .args(["-pix_fmt", "yuv420p", "-tag:v", "hvc1"])
            .arg(&mp4)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(ffmpeg9::ffmpeg9())
                .args(["-v", "error", "-y", "-i"])
                .arg(&mp4)
                .args(["-c", "copy", "-f", "flv"])
                .arg(&flv)
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "ffmpeg 9 could not make {}", flv.display());
    }
    (flv, mp4)
}

/// The video frames of an FLV file (legacy AVC or Enhanced RTMP coded
/// frames), as the ladder's outputs must count them.
fn video_frames(path: &Path) -> usize {
    read_flv(path)
        .iter()
        .filter(|t| {
            t.kind == 9
                && if t.body[0] & 0x80 != 0 {
                    matches!(t.body[0] & 0x0f, 1 | 3)
                } else {
                    t.body[1] == 1
                }
        })
        .count()
}

#[derive(Debug, Clone, Copy)]
struct Measure {
    wall: f64,
    cpu: f64,
    peak_rss_mb: f64,
}

fn rusage(who: i32) -> f64 {
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(who, &mut r) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

fn status_kb(pid: &str, key: &str) -> f64 {
    proc::status_kb(pid, key) as f64
}

fn ladder(rungs: &[(&str, u32, u32, u32)], preset: &str) -> TranscodeConfig {
    // BENCH_THREADS=2,1,1,1 sets x264 threads per rung (default: the
    // shipped default).
    let threads: Vec<usize> = std::env::var("BENCH_THREADS")
        .map(|v| v.split(',').filter_map(|t| t.parse().ok()).collect())
        .unwrap_or_default();
    TranscodeConfig {
        ladder: rungs
            .iter()
            .enumerate()
            .map(|(i, &(n, w, h, k))| {
                let mut r = RungConfig {
                    preset: preset.into(),
                    ..RungConfig::new(n, w, h, k)
                };
                if let Some(t) = threads.get(i) {
                    r.threads = *t;
                }
                r
            })
            .collect(),
        ..TranscodeConfig::default()
    }
}

const FULL_LADDER: &[(&str, u32, u32, u32)] = &[
    ("1080p", 1920, 1080, 4500),
    ("720p", 1280, 720, 2500),
    ("480p", 854, 480, 1200),
    ("360p", 640, 360, 600),
];

/// The file's video on a bus of its own, as the transcoder would read it.
fn load(
    path: &Path,
    name: &str,
) -> (
    Registry,
    BroadcastConsumer,
    Vec<streamd::bus::FrameEvent>,
    f64,
) {
    let registry = Registry::new(
        Duration::ZERO,
        Retention {
            window: Duration::from_secs(3600),
            max_groups: 1 << 20,
            max_bytes: 1 << 32,
            max_frames: usize::MAX,
        },
    );
    let producer = registry
        .publish(StreamPath::new("bench", name).unwrap())
        .unwrap();
    let consumer = producer.consumer();
    let mut ingest = TagIngest::new(producer);
    let at = Arrival::now();
    let mut last = 0;
    for t in read_flv(path) {
        if t.kind == 9 {
            ingest.video(t.body, t.ts, at).unwrap();
            last = t.ts;
        }
    }
    let mut c = consumer
        .subscribe_at("video", StartAt::Oldest, None)
        .unwrap();
    let mut events = Vec::new();
    while let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() {
        events.push(f);
    }
    let media = (last as f64 + 1000.0 / 30.0) / 1000.0;
    // Keep the publisher alive (its drop would interrupt the broadcast).
    std::mem::forget(ingest);
    (registry, consumer, events, media)
}

fn frames_on(b: &BroadcastConsumer, track: &str) -> usize {
    let mut c = b.subscribe_at(track, StartAt::Oldest, None).unwrap();
    let mut n = 0;
    while let TryNext::Event(TrackEvent::Frame(_)) = c.try_next() {
        n += 1;
    }
    n
}

/// streamd's ladder over the file, in this process.
fn run_streamd(path: &Path, config: &TranscodeConfig) -> (Measure, f64) {
    let (_registry, consumer, events, media) = load(path, "one");
    let frames = events.len();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = status_kb("self", "VmRSS:");
    let cpu0 = rusage(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    let mut l = OfflineLadder::new(consumer.clone(), config.clone());
    for ev in events {
        l.push_video(ev);
    }
    l.finish();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = rusage(libc::RUSAGE_SELF) - cpu0;
    let peak = status_kb("self", "VmHWM:") - rss0;
    let rungs: Vec<_> = consumer
        .snapshot()
        .tracks
        .into_iter()
        .filter(|t| t.name != "video")
        .collect();
    assert_eq!(
        rungs.len(),
        config.ladder.len(),
        "streamd made {} rungs of {}",
        rungs.len(),
        config.ladder.len()
    );
    assert!(frames > 0, "no frames in {}", path.display());
    for info in &rungs {
        let n = frames_on(&consumer, &info.name);
        assert_eq!(
            n, frames,
            "streamd rung {} encoded {n} of {frames} frames",
            info.name
        );
    }
    (
        Measure {
            wall,
            cpu,
            peak_rss_mb: peak / 1024.0,
        },
        media,
    )
}

/// The ffmpeg CLI's ladder over the same file: one process, one decode,
/// split + scale, four libx264 encoders with the settings streamd uses.
fn run_ffmpeg(
    path: &Path,
    rungs: &[(&str, u32, u32, u32)],
    preset: &str,
    frames: usize,
) -> Measure {
    let n = rungs.len();
    let mut graph = format!("[0:v]split={n}");
    for i in 0..n {
        graph.push_str(&format!("[s{i}]"));
    }
    for (i, (_, w, h, _)) in rungs.iter().enumerate() {
        graph.push_str(&format!(
            ";[s{i}]scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bilinear[v{i}]"
        ));
    }
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-filter_complex", &graph]);
    for (i, (_, _, _, kbps)) in rungs.iter().enumerate() {
        let rate = format!("{kbps}k");
        cmd.args([
            "-map",
            &format!("[v{i}]"),
            "-c:v",
            "libx264",
            "-preset",
            preset,
        ])
        .args([
            "-tune",
            "zerolatency",
            "-profile:v",
            "high",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate, "-bf", "0",
        ])
        .args(["-g", "300", "-x264-params", "scenecut=0:open-gop=0"])
        .args(["-force_key_frames", "expr:gte(t,n_forced*2)"])
        .args(["-f", "framemd5"])
        .arg(out_dir.path().join(format!("{i}.md5")));
    }
    let cpu0 = rusage(libc::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("ffmpeg");
    let pid = child.id().to_string();
    let mut peak: f64 = 0.0;
    loop {
        peak = peak.max(status_kb(&pid, "VmHWM:"));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "ffmpeg ladder failed");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = rusage(libc::RUSAGE_CHILDREN) - cpu0;
    // framemd5 lists each encoded packet: every output got every frame.
    for i in 0..n {
        let list = std::fs::read_to_string(out_dir.path().join(format!("{i}.md5"))).unwrap();
        let packets = list.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(
            packets, frames,
            "ffmpeg output {i}: {packets} packets for {frames} frames"
        );
    }
    Measure {
        wall,
        cpu,
        peak_rss_mb: peak / 1024.0,
    }
}

/// Runs per side in the full benchmark.
const REPEAT: usize = 3;

/// A child process killed (and reaped) when dropped, on a panic too: a
/// failed run leaves nothing running.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `[transcode]` table with `rungs`, for the binary's config.
fn live_ladder(rungs: &[(&str, u32, u32, u32)], preset: &str) -> String {
    let mut t = "[transcode]\nenabled = true\n".to_owned();
    for (name, w, h, kbps) in rungs {
        t += &format!(
            "[[transcode.ladder]]\nname = \"{name}\"\nwidth = {w}\nheight = {h}\nbitrate_kbps = {kbps}\npreset = \"{preset}\"\n"
        );
    }
    t
}

/// The run with the median wall time.
fn median(mut runs: Vec<Measure>) -> Measure {
    runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    runs[runs.len() / 2]
}

fn report(what: &str, m: Measure, media: f64) {
    println!(
        "{what:<34} {:>6.2}x realtime  {:>5.2} CPU-s per media-s  peak RSS {:>6.1} MB",
        media / m.wall,
        m.cpu / media,
        m.peak_rss_mb
    );
}

/// N 720p streams transcoded at once, each on its own thread: the per
/// stream x realtime (at least 1.0 means the machine holds N live).
fn concurrent(path: &Path, config: &TranscodeConfig, n: usize) -> f64 {
    let loaded: Vec<_> = (0..n).map(|i| load(path, &format!("s{i}"))).collect();
    let media = loaded[0].3;
    let t0 = Instant::now();
    let threads: Vec<_> = loaded
        .into_iter()
        .map(|(registry, consumer, events, _)| {
            let config = config.clone();
            std::thread::spawn(move || {
                let _registry = registry;
                let mut l = OfflineLadder::new(consumer, config);
                for ev in events {
                    l.push_video(ev);
                }
                l.finish();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    media / t0.elapsed().as_secs_f64()
}

/// What a live run of the real binary showed.
struct Live {
    cpu_percent: f64,
    p50_ms: f64,
    p99_ms: f64,
    dropped: f64,
    peak_rss_mb: f64,
}

/// The streamd binary with the `[transcode]` table `transcode`, while
/// ffmpeg publishes `input` in real time (`-re`, looped): CPU,
/// ingest-to-servable-part latency (the `received` time travels through
/// the transcoder), drops and peak RSS over `seconds` after a `warmup`.
/// The run must be real, or it gives no figures: the publish accepted and
/// still going at the end, `variants` renditions in the master playlist,
/// and parts made while it was measured.
fn live(transcode: &str, variants: usize, input: &Path, warmup: u64, seconds: u64) -> Live {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamd.toml");
    // Any name may publish; the database stays in the run's directory.
    std::fs::write(
        &config,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [srt]\nenabled = false\n[auth]\npublish = \"open\"\n[database]\ndata_dir = \"{}\"\n{transcode}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut streamd = Command::new(env!("CARGO_BIN_EXE_streamd"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(Killed)
        .expect("streamd binary");
    let mut lines = std::io::BufReader::new(streamd.0.stdout.take().unwrap()).lines();
    let (mut rtmp, mut http) = (None, None);
    while rtmp.is_none() || http.is_none() {
        let line = lines.next().expect("streamd exited").unwrap();
        for (what, slot) in [("rtmp listening", &mut rtmp), ("http listening", &mut http)] {
            if line.contains(what)
                && let Some(a) = line.split("addr=").nth(1)
            {
                *slot = a.split_whitespace().next().map(str::to_owned);
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (rtmp, http) = (rtmp.unwrap(), http.unwrap());
    let mut publisher = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
        .arg(input)
        .args([
            "-c",
            "copy",
            "-f",
            "flv",
            &format!("rtmp://{rtmp}/live/bench"),
        ])
        .spawn()
        .map(Killed)
        .expect("ffmpeg");
    let pid = streamd.0.id().to_string();
    let ticks = || proc::cpu_ticks(&pid);
    let curl = |path: &str| {
        Command::new("curl")
            .args(["-s", &format!("http://{http}{path}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    std::thread::sleep(Duration::from_secs(warmup));
    let master = curl("/live/bench/llhls.m3u8");
    let listed = master.matches("#EXT-X-STREAM-INF").count();
    assert_eq!(
        listed, variants,
        "the publish is not live as expected (no figures from this run): {master}"
    );
    let metrics = || curl("/metrics");
    let value = |metrics: &str, prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let parts = "streamd_llhls_ingest_to_part_seconds_count";
    let parts0 = value(&metrics(), parts);
    let t0 = ticks();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu_percent = (ticks() - t0) / seconds as f64;
    let metrics = metrics();
    let value = |prefix: &str| value(&metrics, prefix);
    assert!(
        publisher.0.try_wait().unwrap().is_none(),
        "the publisher stopped during the run (no figures from it)"
    );
    assert!(
        value(parts) > parts0,
        "no part was made during the run (no figures from it)"
    );
    let result = Live {
        cpu_percent,
        p50_ms: value("streamd_llhls_ingest_to_part_seconds{quantile=\"0.5\"}") * 1000.0,
        p99_ms: value("streamd_llhls_ingest_to_part_seconds{quantile=\"0.99\"}") * 1000.0,
        dropped: value("streamd_transcode_dropped_frames_total") + 0.0,
        peak_rss_mb: status_kb(&pid, "VmHWM:") / 1024.0,
    };
    drop((publisher, streamd));
    result
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        // Smoke run: both sides, a tiny input, every frame out.
        let rungs = &[("180p", 320, 180, 300), ("90p", 160, 90, 100)];
        let path = input("smoke", "320x180", 2, false);
        let config = ladder(rungs, "ultrafast");
        let (m, media) = run_streamd(&path, &config);
        report("smoke: streamd", m, media);
        let frames = video_frames(&path);
        let f = run_ffmpeg(&path, rungs, "ultrafast", frames);
        report("smoke: ffmpeg CLI", f, media);
        // An HEVC source, both sides.
        let (flv, mp4) = hevc_input("smoke-hevc", "320x180", 2);
        let (m, media) = run_streamd(&flv, &config);
        report("smoke: streamd (HEVC source)", m, media);
        let f = run_ffmpeg(&mp4, rungs, "ultrafast", video_frames(&flv));
        report("smoke: ffmpeg CLI (HEVC source)", f, media);
        // The live run's checks, on the small input and the same ladder.
        // (180p is the source's size: the top rung passes it through.)
        let l = live(&live_ladder(rungs, "ultrafast"), 2, &path, 3, 2);
        println!(
            "smoke: live  CPU {:>5.0}%  ingest->part p50 {:>4.0} ms  dropped {}",
            l.cpu_percent, l.p50_ms, l.dropped
        );
        return;
    }

    println!("The 4-rung ladder (1080p 4.5M, 720p 2.5M, 480p 1.2M, 360p 600k) on 10 s of 1080p30:");
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for (name, noisy, preset) in [
        ("pattern", false, "veryfast"),
        ("pattern", false, "superfast"),
        ("noisy", true, "veryfast"),
        ("hevc", false, "veryfast"),
    ] {
        if !only.is_empty() && only != format!("{name}-{preset}") {
            continue;
        }
        // streamd reads `path`; the CLI reads `cli_path` (the same video).
        let (path, cli_path) = if name == "hevc" {
            hevc_input("1080p-hevc", "1920x1080", 10)
        } else {
            let p = input(&format!("1080p-{name}"), "1920x1080", 10, noisy);
            (p.clone(), p)
        };
        let frames = video_frames(&path);
        let config = ladder(FULL_LADDER, preset);
        // Alternating runs, medians: the machine's speed drifts by 5-10%.
        let mut fs = Vec::new();
        let mut ss = Vec::new();
        let mut media = 0.0;
        for _ in 0..REPEAT {
            fs.push(run_ffmpeg(&cli_path, FULL_LADDER, preset, frames));
            let (s, m) = run_streamd(&path, &config);
            ss.push(s);
            media = m;
        }
        let (f, s) = (median(fs), median(ss));
        report(&format!("{name} {preset}: ffmpeg CLI"), f, media);
        report(&format!("{name} {preset}: streamd"), s, media);
        println!(
            "{:<34} {:>6.2}x the CLI's throughput\n",
            format!("{name} {preset}: streamd/ffmpeg"),
            f.wall / s.wall
        );
    }

    if !only.is_empty() && only != "live" {
        return;
    }
    println!("Live: the streamd binary, ffmpeg -re publishing the noisy 1080p30 file, 20 s:");
    let path = input("1080p-noisy", "1920x1080", 10, true);
    for transcode in [false, true] {
        let (table, variants) = if transcode {
            (live_ladder(FULL_LADDER, "veryfast"), FULL_LADDER.len())
        } else {
            ("[transcode]\nenabled = false\n".to_owned(), 1)
        };
        let l = live(&table, variants, &path, 5, 20);
        println!(
            "transcode={transcode:<5}  CPU {:>5.0}% (of 200%)  ingest->part p50 {:>4.0} ms p99 {:>4.0} ms  dropped {}  peak RSS {:.0} MB",
            l.cpu_percent, l.p50_ms, l.p99_ms, l.dropped, l.peak_rss_mb
        );
    }
    println!();
    if !only.is_empty() {
        return;
    }
    println!("Concurrent 720p30 sources (noisy), each through 720p + 480p + 360p, veryfast:");
    let path = input("720p-noisy", "1280x720", 10, true);
    let config = ladder(FULL_LADDER, "veryfast");
    for n in 1..=4 {
        let x = concurrent(&path, &config, n);
        println!(
            "{n} stream(s): {x:.2}x realtime each{}",
            if x >= 1.0 { "" } else { "  (not real time)" }
        );
        if x < 1.0 {
            break;
        }
    }
}
