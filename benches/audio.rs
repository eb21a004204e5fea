//! The audio transcoders against the ffmpeg CLI, side by side: a WHIP
//! publisher's Opus to AAC (LL-HLS, recordings) and an RTMP publisher's AAC
//! to Opus (WebRTC), on the same input, in turn (ffmpeg, streamd, ffmpeg,
//! streamd). Each figure is CPU seconds per minute of stereo audio; the
//! ratio is streamd / ffmpeg.
//!
//! The input is 60 s of 48 kHz stereo (pink noise under a 440 Hz tone,
//! different in each ear) encoded once by the CLI: Opus in 20 ms frames at
//! 96 kbps (what a browser sends), AAC-LC at 128 kbps (what OBS sends).
//! streamd's side is `AudioTranscoder` fed the demuxed packets on one
//! thread and timed by that thread's CPU clock; the CLI's is its process
//! CPU (`-threads 1`, decoding to `-f null`), both encoding at the bitrate
//! and with the coder streamd uses (AAC 128 kbps `aac_coder=fast`, Opus
//! 64 kbps `application=lowdelay`).
//!
//! `cargo bench --bench audio` writes target/audio_bench.json; run by
//! `cargo test` it is a smoke run of 10 s inputs, one round, which must
//! produce every figure.

#[path = "common/proc.rs"]
mod proc;

use std::path::{Path, PathBuf};
use std::process::Command;

use proc::thread_cpu;

use ffmpeg_next as ff;
use streamd::media::{AacConfig, CodecConfig, OpusConfig};
use streamd::transcode::codec::{AudioPacket, AudioTarget, AudioTranscoder};

struct Input {
    path: PathBuf,
    config: CodecConfig,
    /// (data, pts at 48 kHz)
    packets: Vec<(Vec<u8>, i64)>,
}

fn make_input(dir: &Path, seconds: u32, opus: bool) -> PathBuf {
    let path = dir.join(if opus { "in.opus" } else { "in.m4a" });
    let codec: &[&str] = if opus {
        &["-c:a", "libopus", "-frame_duration", "20", "-b:a", "96k"]
    } else {
        &["-c:a", "aac", "-b:a", "128k"]
    };
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args([
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=color=pink:amplitude=0.15:sample_rate=48000",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-filter_complex",
            "[0:a][1:a]amerge=inputs=2,pan=stereo|c0=c0+0.3*c1|c1=0.6*c0+0.5*c1[a]",
            "-map",
            "[a]",
            "-t",
            &seconds.to_string(),
        ])
        .args(codec)
        .arg(&path)
        .status()
        .expect("ffmpeg (apt ffmpeg)");
    assert!(status.success(), "ffmpeg could not make the input");
    path
}

/// The file's audio packets and its codec configuration.
fn demux(path: &Path) -> Input {
    let mut ictx = ff::format::input(path).expect("the input opens");
    let stream = ictx
        .streams()
        .best(ff::media::Type::Audio)
        .expect("an audio stream");
    let index = stream.index();
    let tb = stream.time_base();
    let par = stream.parameters();
    // SAFETY: codecpar of an open stream; extradata is its codec's headers.
    let extradata = unsafe {
        let p = par.as_ptr();
        if (*p).extradata.is_null() {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize).to_vec()
        }
    };
    let config = match par.id() {
        ff::codec::Id::OPUS => CodecConfig::Opus(OpusConfig {
            channels: extradata.get(9).copied().unwrap_or(2),
            pre_skip: u16::from_le_bytes([extradata[10], extradata[11]]),
            input_sample_rate: 48_000,
        }),
        ff::codec::Id::AAC => {
            CodecConfig::Aac(AacConfig::parse(bytes::Bytes::from(extradata)).expect("an ASC"))
        }
        other => panic!("unexpected codec {other:?}"),
    };
    let mut packets = Vec::new();
    for (s, p) in ictx.packets() {
        if s.index() != index {
            continue;
        }
        let pts = p.pts().unwrap_or(0);
        let pts48 = pts * 48_000 * i64::from(tb.numerator()) / i64::from(tb.denominator());
        packets.push((p.data().unwrap_or_default().to_vec(), pts48));
    }
    Input {
        path: path.to_owned(),
        config,
        packets,
    }
}

/// streamd's transcoder over the whole input: CPU seconds, packets out.
fn streamd_run(input: &Input, target: AudioTarget, bitrate: u32) -> (f64, usize) {
    let start = thread_cpu();
    let mut t = AudioTranscoder::new(&input.config, target, bitrate).expect("a transcoder");
    let mut out: Vec<AudioPacket> = Vec::new();
    let mut n = 0;
    for (data, pts) in &input.packets {
        t.push(data, *pts, &mut out)
            .expect("every packet transcodes");
        n += out.len();
        out.clear();
    }
    t.finish(&mut out);
    n += out.len();
    ((thread_cpu() - start).as_secs_f64(), n)
}

/// The ffmpeg CLI doing the same: its process's CPU seconds.
fn ffmpeg_run(input: &Input, target: AudioTarget) -> f64 {
    let codec: &[&str] = match target {
        AudioTarget::Aac => &["-c:a", "aac", "-aac_coder", "fast", "-b:a", "128k"],
        AudioTarget::Opus => &["-c:a", "libopus", "-application", "lowdelay", "-b:a", "64k"],
    };
    let mut child = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-threads",
            "1",
            "-i",
        ])
        .arg(&input.path)
        .args(["-threads", "1", "-ar", "48000", "-ac", "2"])
        .args(codec)
        .args(["-f", "null", "-"])
        .spawn()
        .expect("ffmpeg");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage for wait4 to fill; our own child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let _ = child.try_wait();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "ffmpeg failed"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (seconds, rounds) = if full { (60, 3) } else { (10, 1) };
    ff::init().unwrap();
    ff::util::log::set_level(ff::util::log::Level::Error);
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (name, opus_in, target, bitrate) in [
        ("opus_to_aac", true, AudioTarget::Aac, 128_000),
        ("aac_to_opus", false, AudioTarget::Opus, 64_000),
    ] {
        let input = demux(&make_input(dir.path(), seconds, opus_in));
        assert!(
            input.packets.len() as u32 >= seconds * 40,
            "{name}: only {} input packets",
            input.packets.len()
        );
        let per_minute = |cpu: f64| cpu * 60.0 / f64::from(seconds);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            theirs.push(per_minute(ffmpeg_run(&input, target)));
            let (cpu, packets) = streamd_run(&input, target, bitrate);
            assert!(
                packets as u32 >= seconds * 40,
                "{name}: only {packets} packets out"
            );
            ours.push(per_minute(cpu));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, t) = (median(&mut ours), median(&mut theirs));
        println!(
            "{name}: streamd {o:.3} s/min, ffmpeg CLI {t:.3} s/min, ratio {:.2}x (runs: streamd {ours:.3?}, ffmpeg {theirs:.3?})",
            o / t
        );
        results.push(serde_json::json!({
            "case": name,
            "streamd_cpu_s_per_min": o,
            "ffmpeg_cpu_s_per_min": t,
            "ratio": o / t,
            "streamd_runs": ours,
            "ffmpeg_runs": theirs,
        }));
    }
    if full {
        let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/audio_bench.json");
        std::fs::write(&out, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
        println!("wrote {}", out.display());
    }
}
