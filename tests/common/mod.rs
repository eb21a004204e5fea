//! Shared test harness: a real server on port 0, a real ffmpeg publisher, an
//! HTTP client, and log capture so tests can assert the log lines a user
//! would read.
#![allow(dead_code)] // each test binary uses a different subset

pub mod clock;
pub mod cluster;
mod ffmpeg9;
pub mod gate;
pub mod gcs_fake;
pub mod llhls;
pub mod rtmp;
pub mod tls;
pub mod webrtc;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
#[allow(unused_imports)] // each test binary uses a different subset
pub use ffmpeg9::ffmpeg9;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::HeaderMap;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use streamd::config::Config;
use streamd::server::Server;
use streamd::shutdown::{self, ShutdownTrigger};
use tokio::process::{Child, Command};

pub struct TestServer {
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    /// Every plain HTTP listener.
    pub http_all: Vec<SocketAddr>,
    /// The HTTPS listener, when `[tls]` is set.
    pub https: Option<SocketAddr>,
    /// The RTMPS listener, when set.
    pub rtmps: Option<SocketAddr>,
    /// The WebRTC UDP socket (loopback, port 0).
    pub webrtc: Option<SocketAddr>,
    /// The WebRTC ICE-TCP listener (loopback, port 0).
    pub webrtc_tcp: Option<SocketAddr>,
    /// The SRT listener (loopback, port 0), when on.
    pub srt: Option<SocketAddr>,
    pub registry: streamd::bus::Registry,
    transcoders: std::sync::Arc<streamd::transcode::Transcoders>,
    /// The WebRTC engines' handle (fault injection).
    pub sfu: Option<streamd::webrtc::Sfu>,
    /// The database and tokens.
    pub access: std::sync::Arc<streamd::auth::Access>,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The data directory (SQLite), removed when the server is dropped.
    _data: tempfile::TempDir,
}

/// The JWT secret test servers use.
pub const TEST_SECRET: &str = "streamd-test-secret-0123456789abcdef";

impl TestServer {
    /// Starts streamd on loopback port 0 with `tweak` applied to the defaults.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::default();
        config.rtmp.listen = "127.0.0.1:0".parse().unwrap();
        config.srt.listen = "127.0.0.1:0".parse().unwrap();
        config.http.listen = vec!["127.0.0.1:0".parse().unwrap()];
        // Packaging tests serve the source as published; the transcoding
        // tests turn the ladder on (with small rungs: two cores).
        config.transcode.enabled = false;
        config.webrtc.udp_listen = "127.0.0.1:0".parse().unwrap();
        config.webrtc.tcp_listen = "127.0.0.1:0".parse().unwrap();
        config.whip.udp_listen = "127.0.0.1:0".parse().unwrap();
        // Most tests publish to names of their choosing; the access tests
        // turn the key policy back on.
        config.auth.publish = streamd::config::PublishPolicy::Open;
        config.auth.jwt_secret = TEST_SECRET.into();
        let data = tempfile::tempdir().expect("a data directory");
        config.database.data_dir = data.path().to_owned();
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let server = Server::bind(config).await.expect("bind");
        let (rtmp, http) = (server.rtmp_addr(), server.http_addr());
        let (http_all, https) = (server.http_addrs(), server.https_addr());
        let rtmps = server.rtmps_addr();
        let webrtc = server.webrtc_addr();
        let webrtc_tcp = server.webrtc_tcp_addr();
        let srt = server.srt_addr();
        let registry = server.registry().clone();
        let transcoders = server.transcoders().clone();
        let sfu = server.sfu();
        let access = server.access().clone();
        let (trigger, stop) = shutdown::channel();
        let task = tokio::spawn(server.run(stop));
        TestServer {
            rtmp,
            http,
            http_all,
            https,
            rtmps,
            webrtc,
            webrtc_tcp,
            srt,
            registry,
            transcoders,
            sfu,
            access,
            trigger,
            task,
            _data: data,
        }
    }

    pub fn rtmp_url(&self, app: &str, stream: &str) -> String {
        format!("rtmp://{}/{app}/{stream}", self.rtmp)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The OME signalling URL of `path` (`/app/stream`).
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.http)
    }

    /// Publishes a test stream (ffmpeg, 30 fps, 1 s GOP) for `seconds`.
    pub fn publish(&self, app: &str, stream: &str, seconds: u32, size: &str) -> Child {
        Publish {
            url: &self.rtmp_url(app, stream),
            seconds,
            size,
            gop: 30,
            copy_to: None,
        }
        .spawn()
    }

    /// The master playlist of `app/stream`, once it is served.
    pub async fn master_when_ready(&self, app: &str, stream: &str) -> Response {
        let url = self.url(&format!("/{app}/{stream}/llhls.m3u8"));
        poll(&url, Duration::from_secs(15), |r| r.status == 200).await
    }

    /// The URL of the video media playlist of a ready stream.
    pub async fn video_playlist(&self, app: &str, stream: &str) -> String {
        let master = self.master_when_ready(app, stream).await;
        let video = media_playlists(&master.text())
            .into_iter()
            .find(|u| u.starts_with("video"))
            .expect("a video rendition");
        self.url(&format!("/{app}/{stream}/{video}"))
    }

    /// A metric from /metrics: the sum over the lines that start with
    /// `name` (a bare name, or one with its labels); 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.url("/metrics"), name).await
    }

    /// Waits up to `timeout` until `f` holds for metric `name`; its value.
    pub async fn metric_reaches(
        &self,
        name: &str,
        timeout: Duration,
        f: impl Fn(f64) -> bool,
    ) -> f64 {
        metric_reaches(&self.url("/metrics"), name, timeout, f).await
    }

    pub fn transcoders(&self) -> &std::sync::Arc<streamd::transcode::Transcoders> {
        &self.transcoders
    }

    pub async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("server stops within 20 s")
            .expect("server task")
            .expect("server run");
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// As [`Logs::capture`], and what threads with no capture of their own
    /// log too. For tests that run one at a time in their binary.
    pub fn capture_every_thread() -> (Logs, CaptureGuard) {
        let (logs, guard) = Logs::capture();
        *EVERY_THREAD.lock().unwrap() = Some(logs.clone());
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Response {
    request_with(method, url, headers, Bytes::new()).await
}

/// `request` with a body.
pub async fn request_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response {
    try_request(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// A GET that reports a connection failure instead of panicking (for a
/// server expected to go away).
pub async fn try_get(url: &str) -> Result<Response, String> {
    try_request("GET", url, &[], Bytes::new()).await
}

async fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}

pub async fn get(url: &str) -> Response {
    request("GET", url, &[]).await
}

/// `app/stream` is served over LL-HLS and its video playlist gains a part
/// within `timeout`.
pub async fn stream_advances(server: &TestServer, app: &str, stream: &str, timeout: Duration) {
    let master = get(&server.url(&format!("/{app}/{stream}/llhls.m3u8"))).await;
    assert_eq!(master.status, 200, "{app}/{stream} is not served");
    let video = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .expect("a video playlist");
    let url = server.url(&format!("/{app}/{stream}/{video}"));
    let before = get(&url).await.text();
    let last_part = |t: &str| {
        t.lines()
            .rfind(|l| l.starts_with("#EXT-X-PART:"))
            .map(str::to_owned)
    };
    let was = last_part(&before);
    poll(&url, timeout, |r| {
        r.status == 200 && last_part(&r.text()) != was
    })
    .await;
}

/// Polls `url` until `ok` accepts the response.
pub async fn poll(url: &str, timeout: Duration, ok: impl Fn(&Response) -> bool) -> Response {
    try_poll(url, timeout, ok)
        .await
        .unwrap_or_else(|r| panic!("{url} never became ready: {} {}", r.status, r.text()))
}

/// [`poll`], with the last answer as the error when none was `ok` in
/// time (for a caller that says more about the failure).
pub async fn try_poll(
    url: &str,
    timeout: Duration,
    ok: impl Fn(&Response) -> bool,
) -> Result<Response, Response> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = get(url).await;
        if ok(&r) {
            return Ok(r);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the test publisher sends.
pub struct Publish<'a> {
    pub url: &'a str,
    pub seconds: u32,
    pub size: &'a str,
    /// Keyframe interval in frames (30 fps).
    pub gop: u32,
    /// Also write exactly what was published to this FLV file.
    pub copy_to: Option<&'a Path>,
}

impl Publish<'_> {
    /// testsrc2 at 30 fps with the glass-to-glass clock drawn on it, and
    /// the clock's click track at 44.1 kHz (see clock.rs), H.264 (x264
    /// veryfast: High profile with B-frames, as OBS sends by default) and
    /// AAC, in real time.
    pub fn spawn(&self) -> Child {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(clock::source_args(self.size, 44100))
            .args(["-t", &self.seconds.to_string()])
            .args([
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ])
            // tee does not ask encoders for global headers; the FLV muxer needs them.
            .args(["-flags:v", "+global_header", "-flags:a", "+global_header"])
            .args([
                "-g",
                &self.gop.to_string(),
                "-keyint_min",
                &self.gop.to_string(),
                "-sc_threshold",
                "0",
            ])
            .args(["-b:v", "500k", "-c:a", "aac", "-b:a", "64k", "-ac", "2"]);
        match self.copy_to {
            Some(path) => {
                cmd.args([
                    "-f",
                    "tee",
                    &format!("[f=flv]{}|[f=flv]{}", self.url, path.display()),
                ]);
            }
            None => {
                cmd.args(["-f", "flv", self.url]);
            }
        }
        cmd.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("ffmpeg is installed (see README)")
    }
}

/// Waits until the broadcast `app/stream` has tracks named `names`.
pub async fn wait_tracks(server: &TestServer, app: &str, stream: &str, names: &[&str]) {
    let path = streamd::bus::StreamPath::new(app, stream).unwrap();
    for _ in 0..400 {
        if let Some(b) = server.registry.get(&path) {
            let tracks = b.snapshot().tracks;
            if names.iter().all(|n| tracks.iter().any(|t| t.name == *n)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got tracks {names:?}");
}

/// The stderr of a finished child, as text.
pub async fn finish(child: Child) -> (std::process::ExitStatus, String) {
    let out = child.wait_with_output().await.expect("wait");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Captures this thread's log lines (use a current-thread runtime so the
/// server's tasks log on the same thread). HTTP requests, connections and
/// WebSocket sessions are served on the server's HTTP worker threads: their
/// lines need [`Logs::capture_every_thread`].
///
/// One global subscriber serves the whole test process and writes each
/// event to the buffer of the thread that logged it. (Thread-local
/// subscribers would not do: tracing caches per-callsite interest
/// globally, so a test without one could silence another's.)
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// What threads without a capture of their own write to: set only by
/// [`Logs::capture_every_thread`] (for servers that log from threads of
/// their own, as SRT's does; the tests that use it run one at a time).
static EVERY_THREAD: std::sync::Mutex<Option<Logs>> = std::sync::Mutex::new(None);

/// Stops capturing on this thread when dropped.
pub struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
        EVERY_THREAD.lock().unwrap().take();
    }
}

impl Logs {
    pub fn capture() -> (Logs, CaptureGuard) {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_writer(ThreadWriter)
                .with_ansi(false)
                .with_env_filter("streamd=debug,info")
                .try_init();
        });
        let logs = Logs::default();
        CURRENT.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, CaptureGuard)
    }

    /// As [`Logs::capture`], and what threads with no capture of their own
    /// log too. For tests that run one at a time in their binary.
    pub fn capture_every_thread() -> (Logs, CaptureGuard) {
        let (logs, guard) = Logs::capture();
        *EVERY_THREAD.lock().unwrap() = Some(logs.clone());
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a log line contains all of `needles`.
    pub async fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no log line with {needles:?} in:\n{}", self.text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes to the capturing thread's buffer, or nowhere.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let own = CURRENT.with(|c| c.borrow().clone());
        let logs = own.or_else(|| EVERY_THREAD.lock().unwrap().clone());
        if let Some(logs) = logs {
            logs.0.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadWriter {
    type Writer = ThreadWriter;
    fn make_writer(&'a self) -> ThreadWriter {
        ThreadWriter
    }
}

/// The value of attribute `name` in a playlist tag line (quotes removed).
pub fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let i = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[i..];
    if let Some(q) = rest.strip_prefix('"') {
        q.split('"').next()
    } else {
        rest.split(',').next()
    }
}

/// The number in attribute `name` on the first line of `text` that has it.
pub fn number_attr(text: &str, name: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    attr(line, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad {name} in {line}"))
}

/// The media playlist URIs named in a master playlist.
pub fn media_playlists(master: &str) -> Vec<String> {
    master
        .lines()
        .filter_map(|l| {
            if let Some(i) = l.find("URI=\"") {
                let rest = &l[i + 5..];
                return rest.split('"').next().map(str::to_owned);
            }
            (!l.starts_with('#') && l.ends_with(".m3u8")).then(|| l.to_owned())
        })
        .collect()
}

/// Runs a command and returns (success, stdout, stderr).
/// A loopback port free right now (the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn run(program: &str, args: &[&str]) -> (bool, String, String) {
    run_with_env(program, args, &[]).await
}

/// [`run`] with `env` added to the environment.
pub async fn run_with_env(
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An FFmpeg Opus decoder set up with `config`'s OpusHead as extradata.
pub fn opus_decoder(config: &streamd::media::OpusConfig) -> ffmpeg_next::decoder::Audio {
    use ffmpeg_next as ff;
    ff::init().unwrap();
    let codec = ff::decoder::find(ff::codec::Id::OPUS).unwrap();
    let mut ctx = ff::codec::Context::new_with_codec(codec);
    let head = config.head();
    // Safety: extradata is an av_malloc'd buffer owned by the context
    // (freed with it), padded as FFmpeg requires.
    unsafe {
        let p = ctx.as_mut_ptr();
        let buf = ff::ffi::av_mallocz(head.len() + 64).cast::<u8>();
        std::ptr::copy_nonoverlapping(head.as_ptr(), buf, head.len());
        (*p).extradata = buf;
        (*p).extradata_size = head.len() as i32;
    }
    ctx.decoder().audio().unwrap()
}

/// A player script's report: the last line of its stdout, as JSON.
pub fn report(out: &str, err: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{out}\n{err}"))
}

/// Plays `url` with hls.js in Chromium (tests/browser/hlsjs.mjs; `args`:
/// seconds, then an optional mode) and returns its report, checked: the
/// run succeeded, hls.js raised no fatal error, and the console's watchdog
/// for hls.js's stuck loaders (web/src/hls-watchdog.js) stepped in at most
/// twice. A stream that keeps a loader stuck fails.
pub async fn hlsjs(url: &str, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let script = browser_dir().join("hlsjs.mjs");
    let mut argv = vec![script.to_str().unwrap(), url];
    argv.extend_from_slice(args);
    let (ok, out, err) = run_with_env("node", &argv, env).await;
    assert!(ok, "hls.js run failed: {err}\n{out}");
    let result = report(&out, &err);
    assert_eq!(result["errors"].as_array().unwrap().len(), 0, "{result}");
    let unstuck = result["unstuck"].as_array().expect("unstuck reported");
    if !unstuck.is_empty() {
        eprintln!("hls.js loaders unstuck by the page: {}", result["unstuck"]);
    }
    assert!(unstuck.len() <= 2, "hls.js kept getting stuck: {result}");
    result
}

/// Runs tests/browser/netns.sh in a new loopback-only network namespace
/// (Chromium's WebRTC needs one): the streamd binary with `config`, and a
/// player script on `url` for `seconds` (`env` picks it and its inputs:
/// PLAYER, RTMP_URL, …). The script's report and netns.sh's stderr.
pub async fn in_netns(
    config: &Path,
    url: &str,
    seconds: u32,
    env: &[(&str, &str)],
) -> (serde_json::Value, String) {
    // Without root, a user namespace maps us to root inside it.
    let unshare = if unsafe { libc::geteuid() } == 0 {
        "-n"
    } else {
        "-rn"
    };
    let netns = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/netns.sh");
    let clock = clock::filter_graph();
    let out = Command::new("unshare")
        .args([unshare, "bash"])
        .arg(&netns)
        .arg(env!("CARGO_BIN_EXE_streamd"))
        .arg(config)
        .args([url, &seconds.to_string()])
        .env("CLOCK_FILTER", &clock)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("unshare runs");
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    (report(&out, &err), err)
}

/// Runs OvenPlayer on `ws_url` for `seconds` in Chromium (`env` for
/// netns.sh: `RTMP_URL` picks the publisher), with streamd
/// transcoding a published stream; OvenPlayer's report, checked to show
/// it playing: decoded frames rising, Opus received, no error, and OME's
/// playlist as OvenPlayer's quality levels.
///
/// Chromium's WebRTC and streamd run in a loopback-only network namespace
/// (netns.sh starts streamd, an ffmpeg publisher and ovenplayer.mjs in it),
/// so no traffic leaves the host and the fixed ports are free.
pub async fn ovenplayer_in_netns(
    env: &[(&str, &str)],
    ws_url: &str,
    seconds: u32,
) -> serde_json::Value {
    browser_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = netns_config(
        dir.path(),
        &[("360p", 640, 360, 600), ("180p", 320, 180, 250)],
    );
    let (r, err) = in_netns(&config, ws_url, seconds, env).await;
    eprintln!("OvenPlayer: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}");
    assert_eq!(r["playing"], true, "{r}\n{err}");
    // Decoded frames keep rising over the run: at least half of 30 fps.
    let frames: Vec<u64> = r["framesDecoded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    let last = *frames.last().unwrap();
    assert!(last >= u64::from(seconds) * 15, "{frames:?}");
    let half = frames[frames.len() / 2];
    assert!(last > half && half > 0, "frames stopped rising: {frames:?}");
    assert!(r["audioPacketsReceived"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["videoCodec"], "video/H264", "{r}");
    assert_eq!(r["audioCodec"], "audio/opus", "{r}");
    let levels = r["qualityLevels"].as_array().expect("quality levels");
    assert_eq!(levels.len(), 2, "{r}");
    // Glass to glass, from the clock the publisher drew into the picture,
    // from the first decoded frame on.
    let playing = f64::from(seconds) - r["firstFrameMs"].as_f64().unwrap() / 1000.0;
    let (p50, p95) = clock::check_joined(&r, playing, 2000, clock::LADDER_GROUP_MS);
    eprintln!("OvenPlayer WebRTC glass-to-glass: p50 {p50} ms, p95 {p95} ms");
    r
}

/// A config for [`in_netns`]: the fixed loopback ports netns.sh expects
/// (RTMP 1935, SRT 9999, HTTP 3333, WebRTC 10000 and ICE-TCP 3478, WHIP 10100), open
/// publishing, and the ladder `rungs` (name, width, height, kbps; x264
/// superfast) or none.
pub fn netns_config(dir: &Path, rungs: &[(&str, u32, u32, u32)]) -> PathBuf {
    let config = dir.join("streamd.toml");
    let mut text = format!(
        "[database]\ndata_dir = \"{}\"\n[auth]\npublish = \"open\"\n",
        dir.join("data").display()
    ) + r#"
[rtmp]
listen = "127.0.0.1:1935"
[srt]
listen = "127.0.0.1:9999"
[http]
listen = "127.0.0.1:3333"
[webrtc]
udp_listen = "127.0.0.1:10000"
tcp_listen = "127.0.0.1:3478"
candidate_ips = ["127.0.0.1"]
[whip]
udp_listen = "127.0.0.1:10100"
"#;
    text.push_str(&format!("[transcode]\nenabled = {}\n", !rungs.is_empty()));
    for (name, width, height, kbps) in rungs {
        text.push_str(&format!(
            "[[transcode.ladder]]\nname = \"{name}\"\nwidth = {width}\nheight = {height}\n\
             bitrate_kbps = {kbps}\npreset = \"superfast\"\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    config
}

/// tests/browser, once its npm packages (the players and playwright-core)
/// and Chromium are checked to be there, with a clear message if not.
pub fn browser_dir() -> &'static Path {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    assert!(
        ["hls.js", "ovenplayer", "playwright-core"]
            .iter()
            .all(|p| dir.join("node_modules").join(p).exists()),
        "browser test tools missing: run `npm ci --prefix tests/browser` (the README's test command does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium missing: apt-get install chromium"
    );
    dir
}

/// ffprobe's video codec, size and decoded frame count of a live media
/// playlist, over its first 45 packets (a live playlist has no end).
pub async fn probe_video(url: &str) -> (String, u64, u64, u64) {
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-read_intervals",
            "%+#45",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    assert!(ok, "ffprobe {url}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
        s["nb_read_frames"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    )
}

/// The master's variant whose CODECS start with `prefix`: its URI.
pub fn variant(master: &str, prefix: &str) -> Option<String> {
    let mut lines = master.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("#EXT-X-STREAM-INF")
            && attr(l, "CODECS").is_some_and(|c| c.trim_matches('"').starts_with(prefix))
        {
            return lines.next().map(str::to_owned);
        }
    }
    None
}

/// libx265 at its fastest, quiet: HEVC for `ffmpeg9_publish`.
pub const X265_FAST: &[&str] = &[
    "-c:v",
    "libx265",
    "-preset",
    "ultrafast",
    "-x265-params",
    "log-level=error",
];

/// FFmpeg 9 publishing `seconds` of the clocked test source (clock.rs) at
/// `size` in real time: `video` (encoder arguments; a keyframe every 30
/// frames, 500 kbps) and AAC, as `format` (`flv`, `mpegts`) to `url`.
pub fn ffmpeg9_publish(url: &str, format: &str, seconds: u32, size: &str, video: &[&str]) -> Child {
    Command::new(ffmpeg9())
        // SVT-AV1 prints its banner unless told to log errors only.
        .env("SVT_LOG", "1")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(clock::source_args(size, 44100))
        .args(["-t", &seconds.to_string()])
        .args(video)
        .args(["-pix_fmt", "yuv420p", "-g", "30", "-keyint_min", "30"])
        .args(["-sc_threshold", "0", "-b:v", "500k"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2"])
        .args(["-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg 9 starts")
}

/// The aiortc viewer (tests/python/aiortc_viewer.py: an independent
/// WebRTC stack) on `url` (OME signalling, or a WHEP endpoint) for
/// `seconds`, with `env`: its report. A run that fails, or a missing
/// virtualenv, fails the test.
pub async fn aiortc(url: &str, seconds: u32, env: &[(&str, &str)]) -> serde_json::Value {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let python = tests.join("python/.venv/bin/python");
    assert!(
        python.exists(),
        "tests/python/.venv missing: run the README's test command"
    );
    let script = tests.join("python/aiortc_viewer.py");
    let (ok, out, err) = run_with_env(
        python.to_str().unwrap(),
        &[script.to_str().unwrap(), url, &seconds.to_string()],
        env,
    )
    .await;
    assert!(ok, "aiortc_viewer.py failed: {err}\n{out}");
    report(&out, &err)
}

/// OvenPlayer, unmodified, in headless Chromium, playing `ws_url` for
/// `seconds` (tests/browser/ovenplayer.mjs): its report.
pub async fn ovenplayer(ws_url: &str, seconds: u32) -> serde_json::Value {
    let script = browser_dir().join("ovenplayer.mjs");
    let (ok, out, err) = run_with_env(
        "node",
        &[script.to_str().unwrap(), ws_url, &seconds.to_string()],
        &[],
    )
    .await;
    assert!(ok, "ovenplayer.mjs failed: {err}\n{out}");
    report(&out, &err)
}

/// The sum of metric `name`'s series at `url` (a `/metrics` page).
pub async fn metric(url: &str, name: &str) -> f64 {
    let text = get(url).await.text();
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// Polls metric `name` at `url` until `f` holds for it or `timeout` passes;
/// its last value (the caller asserts on it).
pub async fn metric_reaches(
    url: &str,
    name: &str,
    timeout: Duration,
    f: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let v = metric(url, name).await;
        if f(v) || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh database on the test server, and its URL; None without one.
pub async fn postgres_database() -> Option<String> {
    let Ok(url) = std::env::var("STREAMD_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("STREAMD_SKIP_POSTGRES").is_some(),
            "STREAMD_TEST_POSTGRES is not set: run the README's test command \
             (bash scripts/test.sh starts a throwaway Postgres), or set \
             STREAMD_SKIP_POSTGRES=1 to skip these tests knowingly"
        );
        eprintln!("STREAMD_SKIP_POSTGRES is set: the Postgres tests did not run");
        return None;
    };
    sqlx::any::install_default_drivers();
    use sqlx::Connection;
    let name = format!("streamd_{}", streamd::random::string(10, b"abcdefghij"));
    let mut admin = sqlx::AnyConnection::connect(&url)
        .await
        .expect("the test Postgres accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

pub struct Nginx {
    child: Child,
    pub base: String,
}

impl Drop for Nginx {
    /// Stops nginx as its docs say: SIGTERM to the master, which stops its
    /// worker and cache manager. The SIGKILL dropping the child sends
    /// would leave them running (and listening) after the test.
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// nginx with the shipped LL-HLS cache configuration
/// (config/nginx/llhls-cache.conf.template, rendered as the official nginx
/// image renders it), caching `upstream` for players at `listen`, in
/// network namespace `netns` if given.
pub async fn nginx(
    dir: &Path,
    upstream: &str,
    listen: &str,
    netns: Option<&str>,
    secret: &str,
) -> Nginx {
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let template = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/nginx/llhls-cache.conf.template"
    );
    let rendered = std::fs::read_to_string(template)
        .unwrap()
        .replace("${STREAMD_UPSTREAM}", upstream)
        .replace("${STREAMD_CLUSTER_SECRET}", secret)
        .replace("${NGINX_LISTEN}", listen)
        .replace("${NGINX_CACHE_DIR}", &cache.display().to_string());
    assert!(!rendered.contains("${"), "a variable left unrendered");
    std::fs::write(dir.join("llhls-cache.conf"), rendered).unwrap();
    // The main file the image would have; this process is root, so the
    // workers run as root too (they write the cache directory).
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user root;\nworker_processes 1;\npid {0}/nginx.pid;\nerror_log {0}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {0}/access.log;\n  client_body_temp_path {0}/body;\n\
             proxy_temp_path {0}/proxy;\n  fastcgi_temp_path {0}/fastcgi;\n\
             uwsgi_temp_path {0}/uwsgi;\n  scgi_temp_path {0}/scgi;\n\
             include {0}/llhls-cache.conf;\n}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = std::fs::File::create(dir.join("nginx.out")).unwrap();
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "nginx"]);
            c
        }
        None => Command::new("nginx"),
    };
    let child = cmd
        .args(["-p", &dir.display().to_string(), "-c"])
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("nginx is installed (scripts/lib.sh installs nginx-light)");
    let addr = listen.to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("nginx.out")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Nginx {
        child,
        base: format!("http://{addr}"),
    }
}
