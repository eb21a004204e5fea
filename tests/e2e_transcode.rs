//! The transcoding ladder end to end: real ffmpeg publishes, streamd decodes
//! once and encodes the rungs (libx264) and Opus (libopus), and the output
//! is checked on the bus, in LL-HLS with ffprobe, and decoded.
//!
//! The ladders here are small (360p and below, 15 fps sources): the machine
//! has two cores. The full 1080p ladder is measured by `benches/transcode.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::rtmp::{PublishError, RtmpClient, Tag, read_flv};
use common::*;
use ffmpeg_next as ff;
use streamd::bus::{BroadcastConsumer, Catalog, FrameEvent, StartAt, TrackEvent, VideoEntry};
use streamd::config::{Config, RungConfig};
use streamd::media::CodecConfig;

/// Transcoding tests take most of both cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rung(name: &str, w: u32, h: u32, kbps: u32) -> RungConfig {
    RungConfig {
        preset: "superfast".into(),
        ..RungConfig::new(name, w, h, kbps)
    }
}

/// A ladder whose top rung is larger than the 720p source (so skipped).
fn small_ladder(c: &mut Config) {
    c.transcode.enabled = true;
    c.transcode.ladder = vec![
        rung("1080p", 1920, 1080, 4500),
        rung("360p", 640, 360, 600),
        rung("240p", 426, 240, 300),
    ];
    c.bus.reconnect_grace = Duration::from_secs(1);
    c.llhls.linger = Duration::from_secs(60);
}

/// Encodes a test source to an FLV file: testsrc2 with temporal noise (so
/// the rungs' encoders have to work for their bitrate), a sine, H.264 High
/// with B-frames and the given keyframe interval.
async fn make_source(path: &Path, size: &str, fps: u32, seconds: u32, gop: u32, noise: bool) {
    let vf = if noise {
        "noise=alls=25:allf=t"
    } else {
        "null"
    };
    let (ok, _, err) = run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate={fps}"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            &seconds.to_string(),
            "-vf",
            vf,
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &gop.to_string(),
            "-keyint_min",
            &gop.to_string(),
            "-sc_threshold",
            "0",
            "-b:v",
            "3000k",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            "2",
            "-f",
            "flv",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "ffmpeg could not make the test source: {err}");
}

/// Everything a track carried, collected from the bus.
#[derive(Default)]
struct Collected {
    frames: Vec<FrameEvent>,
}

impl Collected {
    fn keyframes(&self) -> Vec<i64> {
        self.frames
            .iter()
            .filter(|f| f.frame.keyframe)
            .map(|f| f.frame.pts.ticks())
            .collect()
    }
    fn group_starts(&self) -> Vec<i64> {
        self.frames
            .iter()
            .filter(|f| f.group_start)
            .map(|f| f.frame.pts.ticks())
            .collect()
    }
    fn pts(&self) -> Vec<i64> {
        self.frames.iter().map(|f| f.frame.pts.ticks()).collect()
    }
}

/// Subscribes (from the oldest frame) to every track of the broadcast as it
/// appears, until the broadcast ends.
async fn collect(b: BroadcastConsumer) -> Tracks {
    let mut out: Tracks = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut watch = b.clone();
    loop {
        let snap = b.snapshot();
        for info in snap.tracks {
            if out.contains_key(&info.name) {
                continue;
            }
            let Some(mut c) = b.subscribe_at(&info.name, StartAt::Oldest, None) else {
                continue;
            };
            out.insert(info.name.clone(), (Listed::Not, Collected::default()));
            let name = info.name.clone();
            tasks.spawn(async move {
                let mut frames = Vec::new();
                while let Some(ev) = c.next().await {
                    if let TrackEvent::Frame(f) = ev {
                        frames.push(f);
                    }
                }
                (name, frames)
            });
        }
        if snap.status == streamd::bus::BroadcastStatus::Ended {
            break;
        }
        watch.update().await;
    }
    while let Some(r) = tasks.join_next().await {
        let (name, frames) = r.unwrap();
        if let Some(entry) = out.get_mut(&name) {
            entry.1.frames = frames;
        }
    }
    let catalog = b.catalog().expect("the broadcast has a catalog");
    assert!(catalog.complete, "{catalog:?}");
    for (name, entry) in out.iter_mut() {
        entry.0 = Listed::of(&catalog, name);
    }
    out
}

/// What the broadcast's final catalog says a track is for.
#[derive(Debug, PartialEq)]
enum Listed {
    Video(VideoEntry),
    Audio,
    WebRtcAudio,
    Not,
}

impl Listed {
    fn of(c: &Catalog, track: &str) -> Listed {
        if let Some(v) = c.video_entry(track) {
            Listed::Video(v.clone())
        } else if c.audio.as_deref() == Some(track) {
            Listed::Audio
        } else if c.webrtc_audio.as_deref() == Some(track) {
            Listed::WebRtcAudio
        } else {
            Listed::Not
        }
    }
}

async fn wait_broadcast(server: &TestServer, app: &str, stream: &str) -> BroadcastConsumer {
    let path = streamd::bus::StreamPath::new(app, stream).unwrap();
    for _ in 0..300 {
        if let Some(b) = server.registry.get(&path) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never appeared on the bus");
}

fn publish_file(
    server: &TestServer,
    app: &str,
    stream: &str,
    file: &Path,
) -> tokio::process::Child {
    tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(file)
        .args(["-c", "copy", "-f", "flv", &server.rtmp_url(app, stream)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg is installed")
}

type Tracks = BTreeMap<String, (Listed, Collected)>;

/// Every track of `live/{stream}`, collected from the bus (see [`collect`])
/// until the broadcast ends.
struct Collector {
    task: tokio::task::JoinHandle<Tracks>,
    broadcast: BroadcastConsumer,
}

impl Collector {
    async fn start(server: &TestServer, stream: &str) -> Collector {
        let b = wait_broadcast(server, "live", stream).await;
        Collector {
            broadcast: b.clone(),
            task: tokio::spawn(collect(b)),
        }
    }

    async fn finish(self) -> Tracks {
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the broadcast ends (after the grace period) within 30 s")
            .unwrap()
    }
}

/// A scripted RTMP publisher on `live/{stream}`, and a collector for it.
async fn publish_raw(server: &TestServer, stream: &str) -> (RtmpClient, Collector) {
    let mut client = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    client.publish(stream).await.unwrap();
    let collector = Collector::start(server, stream).await;
    (client, collector)
}

/// Sends each tag at `started + offset_ms + its timestamp`, as a publisher
/// sends in real time.
async fn send_paced<'a>(
    client: &mut RtmpClient,
    tags: impl IntoIterator<Item = &'a Tag>,
    started: tokio::time::Instant,
    offset_ms: u64,
) {
    for t in tags {
        let at = offset_ms + u64::from(t.timestamp);
        tokio::time::sleep_until(started + Duration::from_millis(at)).await;
        client.send(t).await.unwrap();
    }
}

/// ffprobe's frames of a media playlist: (pts, picture type, keyframe).
async fn probe_frames(url: &str) -> Vec<(i64, String, bool)> {
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "frame=pts,pict_type,key_frame",
            "-of",
            "csv=p=0",
            url,
        ],
    )
    .await;
    assert!(ok, "ffprobe {url}: {err}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some((
                f.get(1)?.parse().ok()?,
                f.get(2)?.to_string(),
                *f.first()? == "1",
            ))
        })
        .collect()
}

/// ffprobe's (width, height) and the video bitrate from packet sizes.
async fn probe_stream(url: &str) -> (u32, u32, f64) {
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height:packet=pts_time,size",
            "-of",
            "json",
            url,
        ],
    )
    .await;
    assert!(ok, "ffprobe {url}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v["streams"][0];
    let packets = v["packets"].as_array().unwrap();
    let times: Vec<f64> = packets
        .iter()
        .filter_map(|p| p["pts_time"].as_str()?.parse().ok())
        .collect();
    let bytes: u64 = packets
        .iter()
        .filter_map(|p| p["size"].as_str()?.parse::<u64>().ok())
        .sum();
    let first = times.iter().copied().fold(f64::MAX, f64::min);
    let last = times.iter().copied().fold(f64::MIN, f64::max);
    let frame = (last - first) / (times.len().max(2) - 1) as f64;
    let secs = last - first + frame;
    (
        s["width"].as_u64().unwrap() as u32,
        s["height"].as_u64().unwrap() as u32,
        bytes as f64 * 8.0 / secs,
    )
}

fn decode_opus(frames: &[FrameEvent]) -> usize {
    let CodecConfig::Opus(cfg) = &*frames[0].group.config else {
        panic!("not Opus: {:?}", frames[0].group.config);
    };
    let mut dec = opus_decoder(cfg);
    let mut samples = 0;
    let mut frame = ff::frame::Audio::empty();
    for f in frames {
        dec.send_packet(&ff::Packet::copy(&f.frame.data))
            .expect("every Opus packet decodes");
        while dec.receive_frame(&mut frame).is_ok() {
            assert_eq!(frame.rate(), 48_000);
            assert_eq!(frame.channels(), 2);
            samples += frame.samples();
        }
    }
    samples
}

fn transcoder_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| {
            c.starts_with("streamd-x264")
                || c.starts_with("streamd-decode")
                || c.starts_with("streamd-opus")
        })
        .count()
}

#[tokio::test]
async fn ladder_is_aligned_exact_and_decodes() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.flv");
    // 720p with B-frames and an 8 s keyframe interval (OBS's default), 12 s.
    make_source(&source, "1280x720", 15, 12, 120, true).await;

    let server = TestServer::start(small_ladder).await;
    let publisher = publish_file(&server, "live", "ladder", &source);
    let collector = Collector::start(&server, "ladder").await;

    let master = server.master_when_ready("live", "ladder").await.text();
    // While live: segments and parts line up across rungs (the same
    // numbers, segment and part durations), seen with a blocking reload of
    // the same part on both.
    let layout = |playlist: &str| -> Vec<String> {
        let lines: Vec<String> = playlist
            .lines()
            .filter(|l| {
                l.starts_with("#EXTINF")
                    || l.starts_with("#EXT-X-PART:")
                    || l.starts_with("#EXT-X-MEDIA-SEQUENCE")
            })
            .map(|l| match l.find(",URI=") {
                Some(i) => l[..i].to_owned(),
                None => l.to_owned(),
            })
            .collect();
        // Complete segments only: the open one may differ by a part.
        let last = lines
            .iter()
            .rposition(|l| l.starts_with("#EXTINF"))
            .unwrap_or(0);
        lines[..=last].to_vec()
    };
    let mut layouts = Vec::new();
    for p in media_playlists(&master)
        .iter()
        .filter(|p| !p.starts_with("audio"))
    {
        let url = server.url(&format!("/live/ladder/{p}?_HLS_msn=3&_HLS_part=1"));
        layouts.push(layout(&get(&url).await.text()));
    }
    assert_eq!(layouts.len(), 2);
    assert!(
        layouts[0]
            .iter()
            .filter(|l| l.starts_with("#EXT-X-PART:"))
            .count()
            >= 10,
        "{:?}",
        layouts[0]
    );
    assert_eq!(layouts[0], layouts[1], "rungs' segments and parts differ");
    // The leak check below counts threads by name: while the ladder runs,
    // it sees them (so a renamed thread cannot make it pass vacuously).
    assert!(
        transcoder_threads() >= 3,
        "{} transcoder threads while transcoding",
        transcoder_threads()
    );
    let (status, err) = finish(publisher).await;
    assert!(status.success(), "publisher failed: {err}");
    let tracks = collector.finish().await;

    // The master lists the rungs that fit the source, largest first, with
    // the real codec, resolution, frame rate and the shared AAC group.
    let variants: Vec<&str> = master
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF"))
        .collect();
    assert_eq!(variants.len(), 2, "{master}");
    assert_eq!(attr(variants[0], "RESOLUTION"), Some("640x360"), "{master}");
    assert_eq!(attr(variants[1], "RESOLUTION"), Some("426x240"), "{master}");
    for v in &variants {
        assert!(attr(v, "CODECS").unwrap().starts_with("avc1.64"), "{v}");
        assert!(attr(v, "CODECS").unwrap().contains("mp4a.40.2"), "{v}");
        assert_eq!(attr(v, "FRAME-RATE"), Some("15.000"), "{v}");
        assert_eq!(attr(v, "AUDIO"), Some("audio"), "{v}");
    }
    assert!(
        number_attr(variants[0], "BANDWIDTH") >= 600_000.0,
        "{master}"
    );
    assert!(!master.contains("1080p"), "{master}");
    let playlists = media_playlists(&master);
    assert!(
        playlists.iter().any(|p| p.starts_with("audio_")),
        "{master}"
    );

    // On the bus: every rung has exactly the source's timestamps...
    let source_video = &tracks["video"].1;
    let r360 = &tracks["360p"].1;
    let r240 = &tracks["240p"].1;
    assert!(matches!(tracks["360p"].0, Listed::Video(ref r) if r.webrtc_safe && !r.passthrough));
    // The catalog lists the ladder and the publisher's audio, not its video.
    assert_eq!(tracks["video"].0, Listed::Not);
    assert_eq!(tracks["audio"].0, Listed::Audio);
    assert!(!tracks.contains_key("1080p"));
    assert!(
        source_video.frames.len() >= 170,
        "{}",
        source_video.frames.len()
    );
    let mut src_pts = source_video.pts();
    src_pts.sort();
    assert_eq!(
        r360.pts(),
        src_pts,
        "360p frames are the source's, in order"
    );
    assert_eq!(
        r240.pts(),
        src_pts,
        "240p frames are the source's, in order"
    );
    // ... with no reordering (no B-frames: DTS == PTS) ...
    for f in r360.frames.iter().chain(&r240.frames) {
        assert_eq!(f.frame.dts, f.frame.pts);
    }
    // ... and IDRs every 2 s from the start, identical across rungs,
    // although the source has one keyframe in 8 s.
    let starts = r360.group_starts();
    assert_eq!(starts, r240.group_starts());
    assert_eq!(r360.keyframes(), starts, "no keyframes but the boundaries");
    assert_eq!(r240.keyframes(), starts);
    let first = src_pts[0];
    let expected: Vec<i64> = (0..6).map(|k| first + k * 2000).collect();
    assert_eq!(starts, expected, "IDRs at 2 s multiples (ms)");
    assert_eq!(source_video.keyframes().len(), 2);

    // Opus: exists, decodes, and keeps the AAC's timing within one frame
    // from start to end.
    let opus = &tracks["opus"].1;
    assert_eq!(tracks["opus"].0, Listed::WebRtcAudio);
    let samples = decode_opus(&opus.frames);
    let aac = &tracks["audio"].1;
    let CodecConfig::Opus(cfg) = &*opus.frames[0].group.config else {
        unreachable!()
    };
    let aac_secs = aac.frames.len() as f64 * 1024.0 / 44_100.0;
    let opus_secs = samples as f64 / 48_000.0;
    assert!(
        (opus_secs - aac_secs).abs() < 0.05,
        "Opus {opus_secs} s vs AAC {aac_secs} s"
    );
    let to48 = |f: &FrameEvent| {
        f.frame
            .pts
            .rescale(streamd::time::Timescale::new(48_000).unwrap())
            .ticks()
    };
    let start_offset = to48(&opus.frames[0]) + i64::from(cfg.pre_skip) - to48(&aac.frames[0]);
    let opus_end = to48(opus.frames.last().unwrap()) + 960;
    let aac_end = to48(aac.frames.last().unwrap()) + 1024 * 48_000 / 44_100;
    let end_offset = opus_end - aac_end;
    assert!(
        start_offset.abs() <= 960,
        "Opus starts {start_offset} samples off"
    );
    // At the end, Opus ends after the AAC by the silence that pads its last
    // partial frame (and the encoder's flushed lookahead), at most two
    // frames; a drift would show as more, or as Opus ending early.
    assert!(
        (0..=2 * 960).contains(&(end_offset - start_offset)),
        "A/V drift: {start_offset} samples at the start, {end_offset} at the end"
    );

    // In LL-HLS: each rung decodes at its size, near its bitrate, without
    // B-frames, and with the same keyframes as its sibling.
    let mut key_lists = Vec::new();
    for (name, (w, h, kbps)) in [("360p", (640, 360, 600.0)), ("240p", (426, 240, 300.0))] {
        let url = server.url(&format!(
            "/live/ladder/{}",
            playlists.iter().find(|p| p.starts_with(name)).unwrap()
        ));
        let (pw, ph, bps) = probe_stream(&url).await;
        assert_eq!((pw, ph), (w, h), "{name}");
        let ratio = bps / (kbps * 1000.0);
        eprintln!("{name}: {:.0} kbps ({ratio:.2} of target)", bps / 1000.0);
        assert!(
            (0.75..=1.25).contains(&ratio),
            "{name}: {bps} bps vs {kbps} kbps"
        );
        let frames = probe_frames(&url).await;
        assert!(frames.len() >= 170, "{name}: {} frames", frames.len());
        assert!(frames.iter().all(|f| f.1 != "B"), "{name} has B-frames");
        key_lists.push(
            frames
                .iter()
                .filter(|f| f.2)
                .map(|f| f.0)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(key_lists[0], key_lists[1], "keyframes differ across rungs");
    assert_eq!(key_lists[0].len(), 6);

    // Nothing left running: the threads and FFmpeg contexts are gone.
    let metrics = get(&server.url("/metrics")).await.text();
    // Each encoded rung reported its lag (source arrival to encoded
    // picture): a summary with a count of the pictures it published.
    for rung in ["360p", "240p"] {
        let count = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "streamd_transcode_lag_seconds_count{{rung=\"{rung}\"}} "
                ))
            })
            .unwrap_or_else(|| panic!("no lag for {rung}: {metrics}"));
        assert!(
            count.trim().parse::<f64>().unwrap() > 0.0,
            "{rung}: {count}"
        );
    }
    for _ in 0..50 {
        if transcoder_threads() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(transcoder_threads(), 0, "transcoder threads leaked");
    for gauge in ["streamd_transcode_encoders", "streamd_transcode_decoders"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(gauge))
            .unwrap_or_else(|| panic!("{gauge} missing: {metrics}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    server.stop().await;
}

/// Shifts a file's tags to start at `offset` ms, without its script tag.
fn shifted(tags: Vec<Tag>, offset: u32) -> Vec<Tag> {
    tags.into_iter()
        .filter(|t| t.kind == 8 || t.kind == 9)
        .map(|mut t| {
            t.timestamp += offset;
            t
        })
        .collect()
}

#[tokio::test]
async fn resolution_change_mid_stream_reconfigures_and_keyframes_on_request() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.flv");
    let b = dir.path().join("b.flv");
    make_source(&a, "640x360", 15, 4, 30, false).await;
    // 4:3 and smaller after 16:9: every rung's size changes, so every
    // encoder restarts.
    make_source(&b, "320x240", 15, 4, 30, false).await;
    let mut tags = shifted(read_flv(&a), 0);
    let offset = tags.last().unwrap().timestamp + 67;
    tags.extend(shifted(read_flv(&b), offset));

    let server = TestServer::start(small_ladder).await;
    let (mut client, collector) = publish_raw(&server, "change").await;
    // Real time, as a publisher sends; after 1.3 s, ask the bus for a
    // keyframe on one rung (twice: the second coalesces with the first).
    let started = tokio::time::Instant::now();
    let (before, after): (Vec<&Tag>, Vec<&Tag>) = tags.iter().partition(|t| t.timestamp <= 1300);
    send_paced(&mut client, before, started, 0).await;
    assert!(collector.broadcast.request_keyframe("240p"));
    assert!(collector.broadcast.request_keyframe("240p"));
    assert!(!collector.broadcast.request_keyframe("1080p"));
    send_paced(&mut client, after, started, 0).await;
    drop(client);
    let tracks = collector.finish().await;

    for name in ["360p", "240p"] {
        let frames = &tracks[name].1.frames;
        let sizes: Vec<(u32, u32)> = frames
            .iter()
            .filter(|f| f.group_start)
            .map(|f| match &*f.group.config {
                CodecConfig::H264(c) => (c.info.width, c.info.height),
                other => panic!("{other:?}"),
            })
            .collect();
        // 360p's box would upscale 320x240 to 480x360: rungs never exceed
        // the source, so both rungs are 320x240 after the change.
        let expected = if name == "360p" {
            [(640, 360), (320, 240)]
        } else {
            [(426, 240), (320, 240)]
        };
        assert_eq!(sizes.first(), Some(&expected[0]), "{name}: {sizes:?}");
        assert_eq!(sizes.last(), Some(&expected[1]), "{name}: {sizes:?}");
        // Frames from both halves made it through.
        assert!(frames.len() >= 110, "{name}: {} frames", frames.len());
    }
    // The on-demand keyframe: one IDR inside a group on 240p only.
    let inside = |name: &str| {
        tracks[name]
            .1
            .frames
            .iter()
            .filter(|f| f.frame.keyframe && !f.group_start)
            .count()
    };
    assert_eq!(inside("240p"), 1, "one on-demand keyframe on 240p");
    assert_eq!(inside("360p"), 0);

    // Still playable end to end: every rung's playlist has a discontinuity
    // and a new init segment at the change, and each run of segments
    // decodes cleanly with its init segment. (ffmpeg's HLS reader keeps the
    // first init's parameter sets, so it is fed each run as one file.)
    let master = server.master_when_ready("live", "change").await.text();
    let rungs: Vec<String> = media_playlists(&master)
        .into_iter()
        .filter(|p| !p.starts_with("audio"))
        .collect();
    assert_eq!(rungs.len(), 2, "both rungs are listed: {master}");
    for p in &rungs {
        let url = server.url(&format!("/live/change/{p}"));
        let playlist = get(&url).await.text();
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
        let mut runs: Vec<Vec<u8>> = Vec::new();
        for line in playlist.lines() {
            if let Some(map) = line.strip_prefix("#EXT-X-MAP:URI=") {
                let init =
                    get(&server.url(&format!("/live/change/{}", map.trim_matches('"')))).await;
                assert_eq!(init.status, 200);
                runs.push(init.body.to_vec());
            } else if !line.starts_with('#') && !line.is_empty() {
                let seg = get(&server.url(&format!("/live/change/{line}"))).await;
                assert_eq!(seg.status, 200, "{line}");
                runs.last_mut()
                    .expect("a map before segments")
                    .extend_from_slice(&seg.body);
            }
        }
        assert_eq!(runs.len(), 2, "{playlist}");
        let mut decoded = 0;
        for (i, run_bytes) in runs.iter().enumerate() {
            let file = dir.path().join(format!("{p}-{i}.mp4"));
            std::fs::write(&file, run_bytes).unwrap();
            let (ok, out, err) = run(
                "ffprobe",
                &[
                    "-v",
                    "error",
                    "-count_frames",
                    "-select_streams",
                    "v:0",
                    "-show_entries",
                    "stream=width,height,nb_read_frames",
                    "-of",
                    "csv=p=0",
                    file.to_str().unwrap(),
                ],
            )
            .await;
            assert!(
                ok && err.trim().is_empty(),
                "{p} run {i} does not decode cleanly: {err}"
            );
            let f: Vec<u64> = out.trim().split(',').map(|x| x.parse().unwrap()).collect();
            decoded += f[2];
        }
        assert!(decoded >= 110, "{p}: {decoded} frames");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_app_can_turn_transcoding_off() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| {
        small_ladder(c);
        c.transcode.apps.insert(
            "raw".into(),
            streamd::config::AppTranscodeConfig { enabled: false },
        );
    })
    .await;
    let publisher = server.publish("raw", "s", 3, "320x240");
    let master = server.master_when_ready("raw", "s").await.text();
    let b = wait_broadcast(&server, "raw", "s").await;
    let names: Vec<String> = b.snapshot().tracks.into_iter().map(|t| t.name).collect();
    assert_eq!(names, vec!["video", "audio"], "no rungs, no Opus");
    assert!(
        media_playlists(&master)
            .iter()
            .any(|p| p.starts_with("video_")),
        "{master}"
    );
    let _ = finish(publisher).await;
    server.stop().await;
}

/// `transcode.max_streams`: a publisher beyond it, to an app that is
/// transcoded, is refused with NetStream.Publish.Failed and the reason in
/// the log; an app without transcoding still publishes; the slot comes
/// back when the first publisher leaves.
#[tokio::test(flavor = "current_thread")]
async fn publishers_beyond_the_transcoding_cap_are_refused() {
    let _serial = SERIAL.lock().await;
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(|c| {
        small_ladder(c);
        c.transcode.max_streams = 1;
        c.transcode.apps.insert(
            "raw".into(),
            streamd::config::AppTranscodeConfig { enabled: false },
        );
    })
    .await;
    let mut first = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    first
        .publish("one")
        .await
        .expect("the first takes the slot");

    let mut second = RtmpClient::connect(server.rtmp, "live").await.unwrap();
    match second.publish("two").await {
        Err(PublishError::Refused(code)) => assert_eq!(code, "NetStream.Publish.Failed"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    logs.wait_for(
        &["publish to live/two refused", "transcode.max_streams"],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        server
            .registry
            .get(&streamd::bus::StreamPath::new("live", "two").unwrap())
            .is_none()
    );

    let mut raw = RtmpClient::connect(server.rtmp, "raw").await.unwrap();
    raw.publish("three")
        .await
        .expect("an app without transcoding is not capped");

    // The first publisher leaves: its slot is free again.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let mut c = RtmpClient::connect(server.rtmp, "live").await.unwrap();
        match c.publish("two").await {
            Ok(()) => {
                again = Some(c);
                break;
            }
            Err(PublishError::Refused(code)) => assert_eq!(code, "NetStream.Publish.Failed"),
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the slot never came back");
    drop(raw);
    server.stop().await;
}

#[tokio::test]
async fn corrupt_video_is_survived() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(small_ladder).await;
    let (mut client, collector) = publish_raw(&server, "corrupt").await;
    // The 160x120 fixture twice; in the first pass, every video frame
    // between 0.5 s and 1 s has its slice data replaced by garbage (its NAL
    // lengths still add up, so ingest passes it on to the decoder).
    let fixture = common::rtmp::fixture();
    let span = fixture.last().unwrap().timestamp + 33;
    let mut tags = shifted(fixture.clone(), 0);
    tags.extend(shifted(fixture, span));
    let mut corrupted = 0;
    for t in tags.iter_mut() {
        if t.kind == 9 && t.body.len() > 12 && t.body[1] == 1 && (500..1000).contains(&t.timestamp)
        {
            let mut body = t.body.to_vec();
            for (i, b) in body[10..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(151).wrapping_add(7);
            }
            t.body = body.into();
            corrupted += 1;
        }
    }
    assert!(corrupted > 10);
    send_paced(&mut client, &tags, tokio::time::Instant::now(), 0).await;
    drop(client);
    let tracks = collector.finish().await;
    // The fixture is below every rung: one rung at its size.
    let rung = &tracks["240p"].1;
    let source = &tracks["video"].1;
    let last_source = source.pts().into_iter().max().unwrap();
    let last_rung = rung.pts().into_iter().max().unwrap();
    assert!(
        last_source - last_rung <= 100,
        "the rung stopped at {last_rung} ms, the source went on to {last_source} ms"
    );
    // The second pass came through whole.
    let second: Vec<i64> = rung
        .pts()
        .into_iter()
        .filter(|&p| p >= i64::from(span))
        .collect();
    assert!(
        second.len() >= 55,
        "{} frames after the corruption",
        second.len()
    );
    server.stop().await;
}

#[tokio::test]
async fn top_rung_bypasses_a_fitting_source() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| {
        small_ladder(c);
        c.transcode.ladder = vec![
            RungConfig {
                bypass: true,
                ..rung("360p", 640, 360, 1000)
            },
            rung("240p", 426, 240, 300),
        ];
    })
    .await;
    // 640x360 at 500 kbps (declared in onMetaData), with B-frames.
    let publisher = server.publish("live", "bypass", 4, "640x360");
    let collector = Collector::start(&server, "bypass").await;
    let (status, err) = finish(publisher).await;
    assert!(status.success(), "{err}");
    let tracks = collector.finish().await;
    let Listed::Video(info) = &tracks["360p"].0 else {
        panic!("360p is not a rendition");
    };
    assert!(info.passthrough);
    assert!(!info.webrtc_safe, "the source has B-frames");
    let source = &tracks["video"].1.frames;
    let bypassed = &tracks["360p"].1.frames;
    assert_eq!(bypassed.len(), source.len());
    assert!(
        bypassed
            .iter()
            .zip(source)
            .all(|(b, s)| b.frame.data == s.frame.data && b.frame.pts == s.frame.pts),
        "the bypassed rung is the source, frame for frame"
    );
    // The encoded rung keys where the source does, so segments line up.
    assert_eq!(
        tracks["240p"].1.group_starts(),
        tracks["video"].1.group_starts()
    );
    assert!(matches!(&tracks["240p"].0, Listed::Video(r) if r.webrtc_safe && !r.passthrough));
    server.stop().await;
}

/// Encoders slower than the source (as on a machine too small for the
/// ladder) drop pictures; every rung playlist served meanwhile still keeps
/// LL-HLS's rules: parts between 85% and 100% of PART-TARGET mid-segment,
/// parts adding up to their segment's EXTINF, PART-HOLD-BACK at least three
/// part targets. And hls.js, playing the stream meanwhile, plays on.
#[tokio::test]
async fn playlists_stay_conformant_while_the_encoders_drop_pictures() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(small_ladder).await;
    let publisher = server.publish("live", "overload", 30, "640x360");
    let master = server.master_when_ready("live", "overload").await.text();
    let rungs: Vec<String> = media_playlists(&master)
        .into_iter()
        .filter(|u| u.starts_with("360p") || u.starts_with("240p"))
        .collect();
    assert_eq!(rungs.len(), 2, "two encoded rungs: {master}");
    let drops = "streamd_transcode_dropped_frames_total{stage=\"encode\"}";
    let before = server.metric(drops).await;
    // Each picture takes at least 50 ms per rung: 20 of the source's 30
    // frames a second get through, the rest are dropped as they come.
    server
        .transcoders()
        .slow_encoders(Duration::from_millis(50));
    let mut checked = 0;
    let mut segments = std::collections::BTreeSet::new();
    // hls.js on a rung's own playlist, so it plays pictures the slowed
    // encoder makes (on the master it might settle on the source, which
    // is passed through).
    let rung_url = server.url(&format!("/live/overload/{}", rungs[0]));
    let check = async {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for uri in &rungs {
                let r = get(&server.url(&format!("/live/overload/{uri}"))).await;
                assert_eq!(r.status, 200, "{uri}");
                let m = common::llhls::parse_media(&r.text());
                common::llhls::check_rules(&m);
                segments.extend(m.segments.iter().map(|s| (uri.clone(), s.0)));
                checked += 1;
            }
        }
    };
    // hls.js plays for 10 s of the 12 s the encoders are slow (it reports
    // no fatal error and at most two stuck loads, or the helper fails).
    let ((), hls) = tokio::join!(check, hlsjs(&rung_url, &["10"], &[]));
    server.transcoders().slow_encoders(Duration::ZERO);
    let advanced = hls["advanced"].as_f64().unwrap_or(0.0);
    eprintln!(
        "hls.js under dropped pictures: advanced {advanced:.1} s in 10 s, {} stalls",
        hls["stalls"]
    );
    assert!(
        advanced >= 6.0,
        "hls.js did not play on while the encoders dropped pictures: {hls}"
    );
    let after = server.metric(drops).await;
    // The run is only a test of overload if pictures were dropped, and of
    // the playlists if they kept growing meanwhile.
    assert!(
        after - before >= 30.0,
        "only {} pictures dropped",
        after - before
    );
    assert_eq!(checked, 80);
    // 12 s of 2 s segments.
    assert!(segments.len() >= 2 * 5, "the rungs stalled: {segments:?}");
    drop(publisher);
    server.stop().await;
}

#[tokio::test]
async fn a_burst_the_encoders_cannot_take_is_skipped_not_queued() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(small_ladder).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("burst.flv");
    make_source(&file, "640x360", 30, 10, 30, false).await;
    let (mut client, collector) = publish_raw(&server, "burst").await;
    let tags = shifted(read_flv(&file), 0);
    // FLV video tags carrying a picture (AVC packet type 1, not the header).
    let video_tags = tags
        .iter()
        .filter(|t| t.kind == 9 && t.body.get(1) == Some(&1))
        .count();
    // The first second in real time: the ladder is up and encoding.
    let started = tokio::time::Instant::now();
    send_paced(
        &mut client,
        tags.iter().filter(|t| t.timestamp < 1000),
        started,
        0,
    )
    .await;
    let before = server
        .metric("streamd_transcode_dropped_frames_total")
        .await;
    // Then the encoders stall (fault hook) and 6 s of video arrive as
    // fast as the socket takes them. Ingest must not wait for the
    // encoders: if it did, the burst could never be sent while they are
    // stalled (the bound only turns that hang into a failure).
    server
        .transcoders()
        .slow_encoders(Duration::from_secs(3600));
    tokio::time::timeout(Duration::from_secs(60), async {
        for t in tags.iter().filter(|t| (1000..7000).contains(&t.timestamp)) {
            client.send(t).await.unwrap();
        }
    })
    .await
    .expect("ingest waited for the stalled encoders");
    // What the stalled encoders could not take was dropped, not queued:
    // of the burst's 180 pictures, at most the rungs' small queues wait.
    // The decoder is not stalled, so the pictures still in its queue when
    // the send returns are dropped as it catches up: wait for that (on a
    // slow machine 147 had been counted when the send returned).
    let during = server
        .metric_reaches(
            "streamd_transcode_dropped_frames_total",
            Duration::from_secs(30),
            |v| v - before >= 150.0,
        )
        .await
        - before;
    server.transcoders().slow_encoders(Duration::ZERO);
    assert!(
        during >= 150.0,
        "only {during} pictures dropped in the burst"
    );
    // Released, the rest in real time from where the burst ended.
    let resume = tokio::time::Instant::now() - Duration::from_millis(7000);
    send_paced(
        &mut client,
        tags.iter().filter(|t| t.timestamp >= 7000),
        resume,
        0,
    )
    .await;
    drop(client);
    let tracks = collector.finish().await;
    // The source lost nothing; the rung skipped the burst and caught up.
    let source = tracks["video"].1.pts();
    let rung = tracks["360p"].1.pts();
    assert_eq!(source.len(), video_tags, "the source lost frames");
    assert!(
        rung.len() + 100 <= source.len(),
        "rung {} frames, source {}",
        rung.len(),
        source.len()
    );
    assert!(
        source.iter().max().unwrap() - rung.iter().max().unwrap() <= 100,
        "the rung did not catch up with the source"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_clock_reset_inside_a_session_keeps_the_ladder_going() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(small_ladder).await;
    let (mut client, collector) = publish_raw(&server, "reset").await;
    // The fixture twice in one session, its timestamps restarting at 0 the
    // second time (an encoder restarted without reconnecting).
    let fixture = shifted(common::rtmp::fixture(), 0);
    let started = tokio::time::Instant::now();
    for pass in 0..2u64 {
        send_paced(&mut client, &fixture, started, pass * 2100).await;
    }
    drop(client);
    let tracks = collector.finish().await;
    let source = &tracks["video"].1.frames;
    let rung = &tracks["240p"].1.frames;
    // Both passes are encoded: as many rung frames as source frames, less
    // at most what the decoder held when the clock went back.
    assert!(
        rung.len() + 3 >= source.len(),
        "{} of {} frames",
        rung.len(),
        source.len()
    );
    // The second pass starts a new group at its first keyframe.
    let restarts = rung
        .iter()
        .zip(rung.iter().skip(1))
        .filter(|(a, b)| b.frame.pts < a.frame.pts)
        .count();
    assert_eq!(restarts, 1);
    server.stop().await;
}

/// `max_fps` halves a rung's frame rate (30 fps in, 15 out) and keeps its
/// segment boundaries where its siblings have them.
#[tokio::test]
async fn max_fps_caps_a_rungs_frame_rate_and_keeps_its_boundaries() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("30fps.flv");
    make_source(&source, "640x360", 30, 6, 30, false).await;
    let server = TestServer::start(|c| {
        small_ladder(c);
        c.transcode.ladder[2].max_fps = 15.0;
    })
    .await;
    let publisher = publish_file(&server, "live", "capped", &source);
    let collector = Collector::start(&server, "capped").await;
    let master = server.master_when_ready("live", "capped").await.text();
    let (status, err) = finish(publisher).await;
    assert!(status.success(), "publisher failed: {err}");
    let tracks = collector.finish().await;
    let full = &tracks["360p"].1;
    let capped = &tracks["240p"].1;
    let (n_full, n_capped) = (full.frames.len(), capped.frames.len());
    assert!(n_full >= 170, "{n_full} frames at 30 fps");
    assert!(
        (n_capped * 2).abs_diff(n_full) <= 6,
        "{n_capped} frames at 15 fps for {n_full} at 30"
    );
    // Never two pictures closer than the cap allows (0.9 of 1/15 s) ...
    let pts = capped.pts();
    for w in pts.windows(2) {
        assert!(w[1] - w[0] >= 60, "pictures {} ms apart", w[1] - w[0]);
    }
    // ... and the same boundaries as the uncapped rung.
    assert_eq!(capped.group_starts(), full.group_starts());
    let rate = |name: &str| {
        master
            .lines()
            .find(|l| {
                l.starts_with("#EXT-X-STREAM-INF")
                    && attr(l, "RESOLUTION")
                        == Some(if name == "240p" { "426x240" } else { "640x360" })
            })
            .and_then(|l| attr(l, "FRAME-RATE"))
            .unwrap_or_else(|| panic!("no {name} in {master}"))
            .to_owned()
    };
    assert_eq!(rate("240p"), "15.000", "{master}");
    assert_eq!(rate("360p"), "30.000", "{master}");
    server.stop().await;
}
