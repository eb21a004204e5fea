//! Recording's costs, each beside a baseline in the same run:
//!
//! 1. **Overhead per stream**: the real `streamd` binary with recording on
//!    and off (A B A B), the same publishers each time (720p CBR 2.5 Mbps
//!    with AAC, the source passed through): streamd's CPU seconds and peak
//!    RSS per run, and the ratio on/off. A run whose recording made no
//!    segment (on) or some (off) reports nothing.
//! 2. **Upload throughput** to moto's S3 server: streamd's uploader (the
//!    library's `Recorder`, finding a spool of closed segments at start)
//!    against boto3 uploading the same files with as many threads, in
//!    turn, twice each. MB/s and the ratio.
//! 3. **Spool recovery**: 1,000 segments left open by a crash (each two
//!    whole fragments and a torn third): how long `Recorder::open` takes to
//!    cut, measure and journal them all. Checked: all 1,000 closed, each
//!    cut where its last whole fragment ends.
//!
//! `cargo bench --bench record`; run by `cargo test` (no `--bench`), a
//! smoke run: one small publish, 20 files, 50 segments.

#[path = "common/streamd.rs"]
mod binary;
#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/net.rs"]
mod net;
#[path = "common/proc.rs"]
mod proc;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::streamd::config::RecordConfig;
use ::streamd::media::cmaf::{Sample, fragment};
use ::streamd::record::service::Recorder;
use ::streamd::store::Store;
use ::streamd::store::recordings::{
    Recording, RecordingStatus, RenditionInfo, SegmentKind, SegmentRow, SegmentStatus,
};
use bytes::Bytes;
use tokio::process::{Child, Command};

struct Plan {
    full: bool,
    publishers: usize,
    seconds: u64,
    size: &'static str,
    kbps: u32,
    files: usize,
    file_bytes: usize,
    segments: usize,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            full,
            publishers: 3,
            seconds: 30,
            size: "1280x720",
            kbps: 2500,
            files: 200,
            file_bytes: 1 << 20,
            segments: 1000,
        }
    } else {
        Plan {
            full,
            publishers: 1,
            seconds: 4,
            size: "320x240",
            kbps: 300,
            files: 20,
            file_bytes: 64 << 10,
            segments: 50,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        overhead(&plan).await;
        upload(&plan).await;
        recovery(&plan).await;
    });
}

fn venv_bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/.venv/bin")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh (tests/python/requirements.txt)",
        p.display()
    );
    p
}

/// Media segments (`.m4s`) under `dir`, recursively.
fn segments_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                segments_under(&p)
            } else {
                usize::from(p.extension().is_some_and(|x| x == "m4s"))
            }
        })
        .sum()
}

fn publisher(url: &str, plan: &Plan) -> Child {
    binary::publish_cbr_with(
        url,
        plan.size,
        plan.kbps,
        Some(u32::try_from(plan.seconds).expect("seconds fit")),
        60,
        Some(44_100),
    )
}

struct Run {
    cpu_s: f64,
    peak_rss_mb: f64,
    segments: usize,
}

async fn one_run(plan: &Plan, record: bool) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let s = binary::start(
        dir.path(),
        &format!(
            "[transcode]\nenabled = false\n[bus]\nreconnect_grace = \"1s\"\n[record]\nenabled = {record}\n"
        ),
    )
    .await;
    let ticks = binary::clock_ticks().await;
    let cpu0 = proc::cpu_ticks(s.pid);
    let pubs: Vec<Child> = (0..plan.publishers)
        .map(|i| publisher(&format!("rtmp://{}/live/bench{i}", s.rtmp), plan))
        .collect();
    for p in pubs {
        let _ = p.wait_with_output().await;
    }
    // The streams end after the grace; recordings close and upload.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu_s = (proc::cpu_ticks(s.pid) - cpu0) / ticks;
    let peak_rss_mb = proc::status_kb(s.pid, "VmHWM:") as f64 / 1024.0;
    let segments = segments_under(&dir.path().join("data/recordings"));
    drop(s);
    Run {
        cpu_s,
        peak_rss_mb,
        segments,
    }
}

async fn overhead(plan: &Plan) {
    let mut on = Vec::new();
    let mut off = Vec::new();
    let rounds = if plan.full { 2 } else { 1 };
    for _ in 0..rounds {
        on.push(one_run(plan, true).await);
        off.push(one_run(plan, false).await);
    }
    if on.iter().any(|r| r.segments == 0) || off.iter().any(|r| r.segments > 0) {
        println!(
            "overhead: NO FIGURES: recording on made {:?} segments, off {:?}",
            on.iter().map(|r| r.segments).collect::<Vec<_>>(),
            off.iter().map(|r| r.segments).collect::<Vec<_>>()
        );
        std::process::exit(1);
    }
    let mean = |v: &[Run], f: fn(&Run) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (cpu_on, cpu_off) = (mean(&on, |r| r.cpu_s), mean(&off, |r| r.cpu_s));
    let (rss_on, rss_off) = (mean(&on, |r| r.peak_rss_mb), mean(&off, |r| r.peak_rss_mb));
    let media_s = (plan.publishers as u64 * plan.seconds) as f64;
    println!(
        "overhead: {} x {} {} kbps + AAC, {} s, {} runs each (A B A B)",
        plan.publishers, plan.size, plan.kbps, plan.seconds, rounds
    );
    println!(
        "  recording on : CPU {cpu_on:.2} s ({:.2}% of a core per stream)  peak RSS {rss_on:.1} MB  segments {}",
        100.0 * cpu_on / media_s,
        on[0].segments
    );
    println!(
        "  recording off: CPU {cpu_off:.2} s ({:.2}% of a core per stream)  peak RSS {rss_off:.1} MB",
        100.0 * cpu_off / media_s
    );
    println!(
        "  on/off: CPU {:.2}x (+{:.3} core-s per stream-minute)  RSS {:.2}x (+{:.1} MB per stream)",
        cpu_on / cpu_off,
        (cpu_on - cpu_off) / media_s * 60.0,
        rss_on / rss_off,
        (rss_on - rss_off) / plan.publishers as f64
    );
}

struct Moto {
    _child: Child,
    endpoint: String,
}

async fn moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(venv_bin("moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server");
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Moto {
        _child: child,
        endpoint,
    }
}

fn config(dir: &Path, location: String, endpoint: &str) -> RecordConfig {
    RecordConfig {
        location,
        s3_endpoint: endpoint.to_owned(),
        s3_access_key_id: "testing".into(),
        s3_secret_access_key: "testing".into(),
        s3_region: "us-east-1".into(),
        spool_dir: dir.join("spool"),
        node: "bench".into(),
        ..RecordConfig::default()
    }
}

fn recording(id: &str, status: RecordingStatus) -> Recording {
    Recording {
        id: id.to_owned(),
        app: "live".into(),
        stream: "bench".into(),
        status,
        node: "bench".into(),
        location: String::new(),
        renditions: vec![RenditionInfo {
            name: "video".into(),
            kind: "video".into(),
            codecs: "avc1.64001f".into(),
            width: 1280,
            height: 720,
            channels: 0,
            timescale: 90_000,
        }],
        started_at: 0,
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
    }
}

async fn open_store(dir: &Path) -> Arc<Store> {
    let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.display());
    Arc::new(Store::open(&url).await.unwrap())
}

/// streamd's uploader: seconds to move `files` spooled segments to the
/// bucket (from the start of the upload task to an empty backlog).
async fn streamd_upload(plan: &Plan, moto: &Moto, bucket: &str, files: &[PathBuf]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let id = ::streamd::store::recordings::new_recording_id();
    store
        .create_recording(&recording(&id, RecordingStatus::Uploading))
        .await
        .unwrap();
    let spool = dir.path().join("spool").join(&id).join("video");
    std::fs::create_dir_all(&spool).unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(f, spool.join(format!("{i}.m4s"))).unwrap();
        let row = SegmentRow {
            recording_id: id.clone(),
            rendition: "video".into(),
            kind: SegmentKind::Media,
            seq: i as i64,
            init_seq: 0,
            duration_us: 6_000_000,
            bytes: plan.file_bytes as i64,
            discontinuity: false,
            status: SegmentStatus::Closed,
        };
        store.open_segment(&row).await.unwrap();
    }
    let cfg = config(dir.path(), format!("s3://{bucket}/streamd"), &moto.endpoint);
    let recorder = Recorder::open(cfg, dir.path(), store.clone())
        .await
        .unwrap();
    let (trigger, shutdown) = ::streamd::shutdown::channel();
    let start = Instant::now();
    let task = tokio::spawn(recorder.clone().upload(shutdown));
    while store
        .count_segments_in("bench", SegmentStatus::Closed)
        .await
        .unwrap()
        > 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    trigger.trigger();
    let _ = task.await;
    let uploaded = store
        .count_segments_in("bench", SegmentStatus::Uploaded)
        .await
        .unwrap();
    assert_eq!(
        uploaded as usize,
        files.len(),
        "not every file was uploaded"
    );
    secs
}

/// boto3, the same files with as many threads: seconds, timed inside
/// Python around the uploads alone.
async fn boto3_upload(moto: &Moto, bucket: &str, files: &[PathBuf], threads: usize) -> f64 {
    let script = r#"
import sys, time, boto3
from concurrent.futures import ThreadPoolExecutor
endpoint, bucket, threads, *files = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                  aws_secret_access_key="testing", region_name="us-east-1")
def put(i_f):
    i, f = i_f
    with open(f, "rb") as fh:
        s3.put_object(Bucket=bucket, Key=f"boto3/{i}.m4s", Body=fh.read())
t = time.monotonic()
with ThreadPoolExecutor(int(threads)) as ex:
    list(ex.map(put, enumerate(files)))
print(time.monotonic() - t)
n = s3.list_objects_v2(Bucket=bucket, Prefix="boto3/")["KeyCount"]
assert n == len(files), n
"#;
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-c", script, &moto.endpoint, bucket, &threads.to_string()]);
    for f in files {
        cmd.arg(f);
    }
    let out = cmd.output().await.expect("python");
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn upload(plan: &Plan) {
    let moto = moto().await;
    let files_dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..plan.files)
        .map(|i| {
            let p = files_dir.path().join(format!("{i}.m4s"));
            let data: Vec<u8> = (0..plan.file_bytes).map(|_| rand::random::<u8>()).collect();
            std::fs::write(&p, data).unwrap();
            p
        })
        .collect();
    let threads = RecordConfig::default().upload_concurrency;
    let mb = (plan.files * plan.file_bytes) as f64 / 1e6;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let rounds = if plan.full { 2 } else { 1 };
    for round in 0..rounds {
        for bucket in [format!("ours{round}"), format!("boto{round}")] {
            let made = Command::new("curl")
                .args(["-sf", "-X", "PUT", &format!("{}/{bucket}", moto.endpoint)])
                .status()
                .await
                .expect("curl");
            assert!(made.success(), "create bucket {bucket}");
        }
        ours.push(streamd_upload(plan, &moto, &format!("ours{round}"), &files).await);
        theirs.push(boto3_upload(&moto, &format!("boto{round}"), &files, threads).await);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (a, b) = (best(&ours), best(&theirs));
    println!(
        "upload: {} files of {} kB to moto's S3, {threads} at a time, best of {rounds}",
        plan.files,
        plan.file_bytes / 1024
    );
    println!("  streamd uploader: {a:.2} s  {:.1} MB/s", mb / a);
    println!("  boto3 (baseline): {b:.2} s  {:.1} MB/s", mb / b);
    println!("  streamd/boto3 throughput: {:.2}x", b / a);
}

async fn recovery(plan: &Plan) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let id = ::streamd::store::recordings::new_recording_id();
    store
        .create_recording(&recording(&id, RecordingStatus::Recording))
        .await
        .unwrap();
    let spool = dir.path().join("spool").join(&id).join("video");
    std::fs::create_dir_all(&spool).unwrap();
    let sample = |n: usize| Sample {
        duration: 3000,
        composition_offset: 0,
        keyframe: n == 0,
        data: Bytes::from(vec![0x42; 20_000]),
    };
    let mut whole = 0usize;
    for i in 0..plan.segments {
        let base = i as i64 * 90_000;
        let mut file = fragment(1, base, &(0..15).map(sample).collect::<Vec<_>>())
            .unwrap()
            .to_vec();
        file.extend_from_slice(
            &fragment(2, base + 45_000, &(0..15).map(sample).collect::<Vec<_>>()).unwrap(),
        );
        whole = file.len();
        let torn = fragment(3, base + 90_000, &[sample(0)]).unwrap();
        file.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(spool.join(format!("{i}.m4s")), &file).unwrap();
        store
            .open_segment(&SegmentRow {
                recording_id: id.clone(),
                rendition: "video".into(),
                kind: SegmentKind::Media,
                seq: i as i64,
                init_seq: 0,
                duration_us: 0,
                bytes: 0,
                discontinuity: false,
                status: SegmentStatus::Open,
            })
            .await
            .unwrap();
    }
    let cfg = RecordConfig {
        location: format!("file://{}", dir.path().join("store").display()),
        spool_dir: dir.path().join("spool"),
        node: "bench".into(),
        ..RecordConfig::default()
    };
    let start = Instant::now();
    let recorder = Recorder::open(cfg, dir.path(), store.clone())
        .await
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    drop(recorder);
    let rows = store.segments(&id).await.unwrap();
    let right = rows
        .iter()
        .filter(|r| {
            r.status == SegmentStatus::Closed
                && r.bytes as usize == whole
                && r.duration_us == 1_000_000
        })
        .count();
    if right != plan.segments {
        println!(
            "recovery: NO FIGURES: {right} of {} segments repaired right",
            plan.segments
        );
        std::process::exit(1);
    }
    println!(
        "recovery: {} open segments (2 whole fragments and a torn one each, {} kB): {:.0} ms ({:.2} ms per segment)",
        plan.segments,
        whole / 1024,
        secs * 1000.0,
        secs * 1000.0 / plan.segments as f64
    );
}
