//! WebRTC playback end to end: ffmpeg publishes, the ladder transcodes, and
//! a str0m client speaks OME's signalling, completes ICE/DTLS/SRTP against
//! the server's one UDP socket, and decodes what arrives with FFmpeg.

mod common;

use std::time::{Duration, Instant};

use common::webrtc::{Viewer, ViewerEvent};
use common::*;
use ffmpeg_next as ff;
use serde_json::{Value, json};
use streamd::config::Config;
use streamd::media::OpusConfig;

/// Transcoding takes most of both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two small rungs, and a keyframe interval far longer than any test
/// wait: a prompt keyframe can only come from a request.
fn ladder(c: &mut Config) {
    common::webrtc::small_ladder(c);
    c.transcode.keyframe_interval = Duration::from_secs(10);
}

/// Publishes `seconds` of a 640x360 source whose own GOP is 10 s.
fn publish(server: &TestServer, stream: &str, seconds: u32) -> tokio::process::Child {
    Publish {
        url: &server.rtmp_url("live", stream),
        seconds,
        size: "640x360",
        gop: 300,
        copy_to: None,
    }
    .spawn()
}

/// Waits until the stream's renditions and Opus track exist.
async fn wait_ready(server: &TestServer, stream: &str) {
    let path = streamd::bus::StreamPath::new("live", stream).unwrap();
    for _ in 0..300 {
        if let Some(b) = server.registry.get(&path) {
            let tracks = b.snapshot().tracks;
            if tracks.iter().any(|t| t.name == "opus") && tracks.iter().any(|t| t.name == "180p") {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got its renditions");
}

struct H264 {
    dec: ff::decoder::Video,
    frame: ff::frame::Video,
}

impl H264 {
    fn new() -> H264 {
        ff::init().unwrap();
        let codec = ff::decoder::find(ff::codec::Id::H264).unwrap();
        let ctx = ff::codec::Context::new_with_codec(codec);
        H264 {
            dec: ctx.decoder().video().unwrap(),
            frame: ff::frame::Video::empty(),
        }
    }

    /// Decodes one Annex-B access unit; the sizes of the pictures out.
    fn decode(&mut self, au: &[u8]) -> Vec<(u32, u32)> {
        self.dec
            .send_packet(&ff::Packet::copy(au))
            .expect("every access unit decodes");
        let mut out = Vec::new();
        while self.dec.receive_frame(&mut self.frame).is_ok() {
            out.push((self.frame.width(), self.frame.height()));
        }
        out
    }
}

struct Opus {
    dec: ff::decoder::Audio,
    frame: ff::frame::Audio,
}

impl Opus {
    fn new() -> Opus {
        Opus {
            dec: opus_decoder(&OpusConfig {
                channels: 2,
                pre_skip: 312,
                input_sample_rate: 48_000,
            }),
            frame: ff::frame::Audio::empty(),
        }
    }

    fn decode(&mut self, packet: &[u8]) -> usize {
        self.dec
            .send_packet(&ff::Packet::copy(packet))
            .expect("every Opus packet decodes");
        let mut samples = 0;
        while self.dec.receive_frame(&mut self.frame).is_ok() {
            assert_eq!(self.frame.channels(), 2);
            samples += self.frame.samples();
        }
        samples
    }
}

fn notification<'a>(ev: &'a ViewerEvent, kind: &str) -> Option<&'a Value> {
    match ev {
        ViewerEvent::Signal(v) if v["command"] == "notification" && v["type"] == kind => {
            Some(&v["message"])
        }
        _ => None,
    }
}

/// A viewer that joins between keyframes starts at once from the group in
/// progress: every frame of it decodes, the encoder is not asked for a
/// keyframe for it, and the group's frames come pressed together just
/// behind the newest, which the rest follow at their own pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_mid_group_starts_from_the_group_and_decodes_it() {
    let _serial = SERIAL.lock().await;
    // One-second groups (30 frames): always short enough to start from.
    let server = TestServer::start(|c: &mut Config| {
        common::webrtc::small_ladder(c);
        c.transcode.keyframe_interval = Duration::from_secs(1);
    })
    .await;
    let mut publisher = publish(&server, "mid", 40);
    wait_ready(&server, "mid").await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // A viewer that connects just as a keyframe comes starts from it, not
    // from a group (1 in 30 at 30 fps): then another viewer joins.
    let mut started_from_group = false;
    for _ in 0..3 {
        let starts_before = server.metric("streamd_webrtc_group_starts_total").await;
        let requested_before = server
            .metric("streamd_transcode_requested_keyframes_total")
            .await;
        // Pinned: a viewer on automatic ABR is paced, and starts from a
        // group only while its pacer can send it quickly (scenario tests).
        let mut viewer = Viewer::connect(&server.ws_url("/live/mid/360p"), false)
            .await
            .expect("an offer");
        let mut h264 = H264::new();
        let mut times = Vec::new();
        let mut pictures = 0;
        let ok = viewer
            .run_until(Duration::from_secs(20), |ev| {
                if let ViewerEvent::Video {
                    data,
                    keyframe,
                    rtp_time,
                    ..
                } = ev
                {
                    if times.is_empty() {
                        assert!(keyframe, "video starts at a keyframe");
                    }
                    times.push(*rtp_time);
                    pictures += h264.decode(data).len();
                }
                assert!(
                    !matches!(ev, ViewerEvent::Closed),
                    "signalling closed early"
                );
                pictures >= 60
            })
            .await;
        assert!(ok, "{pictures} pictures decoded");
        viewer.stop().await;
        let starts = server.metric("streamd_webrtc_group_starts_total").await;
        let requested = server
            .metric("streamd_transcode_requested_keyframes_total")
            .await;
        // The group: consecutive times one tick apart, then about 3,000
        // apart (30 fps, from FLV's millisecond times).
        let steps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        let burst = steps.iter().take_while(|d| **d == 1).count();
        if burst == 0 {
            assert_eq!(starts, starts_before, "a group start sends a group");
            continue;
        }
        assert_eq!(starts, starts_before + 1.0, "one group start");
        assert_eq!(
            requested, requested_before,
            "no keyframe was asked of the encoder for the viewer"
        );
        assert!(
            steps[burst..]
                .iter()
                .take(20)
                .all(|d| (2900..=3100).contains(d)),
            "live frames after the group: {steps:?}"
        );
        started_from_group = true;
        break;
    }
    assert!(started_from_group, "three viewers and no group start");
    let _ = publisher.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_decodes_switches_and_starts_on_a_requested_keyframe() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(ladder).await;
    let mut publisher = publish(&server, "cam", 40);
    wait_ready(&server, "cam").await;
    // Join a stream already running, its group (10 s) more than 3 s
    // old: too long to start a viewer from (more than 64 frames), so the
    // viewer asks the encoder for a keyframe (it gives at most one a
    // second). A_viewer_joining_mid_group_… below starts from the group.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let requested_before = server
        .metric("streamd_transcode_requested_keyframes_total")
        .await;

    let mut viewer = Viewer::connect(&server.ws_url("/live/cam"), false)
        .await
        .expect("an offer");
    let sdp = viewer.offer["sdp"]["sdp"].as_str().unwrap().to_owned();
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    assert!(sdp.contains("packetization-mode=1"), "{sdp}");
    assert!(sdp.contains("profile-level-id=42e01f"), "{sdp}");
    assert!(sdp.to_lowercase().contains("opus/48000/2"), "{sdp}");
    // Stereo said in the fmtp, or browsers decode the Opus as mono.
    assert!(
        sdp.lines().any(|l| l.starts_with("a=fmtp:111 ")
            && l.contains("stereo=1")
            && l.contains("sprop-stereo=1")),
        "{sdp}"
    );
    let candidate = viewer.offer["candidates"][0]["candidate"].as_str().unwrap();
    assert!(
        candidate.contains(&format!("127.0.0.1 {}", server.webrtc.unwrap().port())),
        "{candidate}"
    );

    // Join: playlist, then the starting rendition, then media.
    let mut playlist = None;
    let mut started = None;
    let mut connected_at = None;
    let mut first_keyframe = None;
    let mut h264 = H264::new();
    let mut opus = Opus::new();
    let (mut pictures, mut samples) = (Vec::new(), 0);
    let mut last_video_ts = None;
    let ok = viewer
        .run_until(Duration::from_secs(20), |ev| {
            if let Some(m) = notification(ev, "playlist") {
                playlist = Some(m.clone());
            }
            if let Some(m) = notification(ev, "rendition_changed") {
                assert!(
                    playlist.is_some(),
                    "playlist comes first (OvenPlayer needs it)"
                );
                started = Some(m["rendition_name"].as_str().unwrap().to_owned());
            }
            match ev {
                ViewerEvent::Connected => connected_at = Some(Instant::now()),
                ViewerEvent::Video {
                    data,
                    keyframe,
                    rtp_time,
                    ..
                } => {
                    if first_keyframe.is_none() {
                        assert!(keyframe, "video starts at a keyframe");
                        first_keyframe = Some(Instant::now());
                    }
                    last_video_ts = Some(*rtp_time);
                    pictures.extend(h264.decode(data));
                }
                ViewerEvent::Audio { data, .. } => samples += opus.decode(data),
                ViewerEvent::Closed => panic!("signalling closed early"),
                _ => {}
            }
            pictures.len() >= 60 && samples >= 48_000
        })
        .await;
    assert!(
        ok,
        "60 pictures and 1 s of audio: got {} and {samples}",
        pictures.len()
    );
    let playlist = playlist.expect("playlist notification");
    let names: Vec<&str> = playlist["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["360p", "180p"]);
    assert_eq!(playlist["auto"], true);
    // start_bitrate_kbps = 1000 picks the largest rung within it.
    assert_eq!(started.as_deref(), Some("360p"));
    assert!(pictures.iter().all(|p| *p == (640, 360)), "{pictures:?}");
    let wait = first_keyframe.unwrap() - connected_at.expect("connected");
    println!("first keyframe {wait:?} after DTLS completed");
    // The rungs' own keyframes are 10 s apart: the viewer asked for one,
    // and an encoder made it inside a group.
    let requested = server
        .metric("streamd_transcode_requested_keyframes_total")
        .await;
    assert!(
        requested > requested_before,
        "no keyframe was made on request"
    );

    // Switch to 180p: the notification, then 320x180 pictures.
    viewer
        .signal(json!({"command": "change_rendition", "id": viewer.id, "rendition_name": "180p", "auto": false}))
        .await;
    let mut changed = false;
    let mut small = 0;
    let mut ts_backwards = false;
    let ok = viewer
        .run_until(Duration::from_secs(15), |ev| {
            if let Some(m) = notification(ev, "rendition_changed") {
                assert_eq!(m["rendition_name"], "180p");
                assert_eq!(m["auto"], false);
                changed = true;
            }
            if let ViewerEvent::Video { data, rtp_time, .. } = ev {
                if last_video_ts.is_some_and(|l| *rtp_time < l) {
                    ts_backwards = true;
                }
                last_video_ts = Some(*rtp_time);
                for p in h264.decode(data) {
                    if p == (320, 180) {
                        small += 1;
                    } else {
                        assert_eq!(small, 0, "no 360p after the switch");
                    }
                }
            }
            changed && small >= 30
        })
        .await;
    assert!(ok, "switched: notified {changed}, {small} small pictures");
    assert!(!ts_backwards, "RTP time continues across the switch");

    viewer.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_blip_keeps_viewers_and_its_end_closes_them() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| {
        ladder(c);
        c.bus.reconnect_grace = Duration::from_secs(5);
    })
    .await;
    let first = publish(&server, "blip", 4);
    wait_ready(&server, "blip").await;
    let mut viewer = Viewer::connect(&server.ws_url("/live/blip"), false)
        .await
        .expect("an offer");
    let mut h264 = H264::new();
    let mut seen: Vec<u64> = Vec::new();
    let ok = viewer
        .run_until(Duration::from_secs(10), |ev| {
            if let ViewerEvent::Video { data, rtp_time, .. } = ev {
                h264.decode(data);
                seen.push(*rtp_time);
            }
            seen.len() >= 20
        })
        .await;
    assert!(ok, "video before the blip");
    let (status, _) = finish(first).await;
    assert!(status.success());
    // The publisher is back within the grace period: same viewer, no new
    // offer, time goes on.
    let before = seen.len();
    let second = publish(&server, "blip", 4);
    let mut closed = false;
    viewer
        .run_until(Duration::from_secs(25), |ev| {
            match ev {
                ViewerEvent::Video { data, rtp_time, .. } => {
                    h264.decode(data);
                    seen.push(*rtp_time);
                }
                ViewerEvent::Closed => closed = true,
                _ => {}
            }
            closed
        })
        .await;
    assert!(
        seen.len() > before + 20,
        "video after the blip: {} frames",
        seen.len() - before
    );
    assert!(
        seen.windows(2).all(|w| w[1] > w[0]),
        "RTP time only moves forward across the reconnect"
    );
    assert!(closed, "the signalling socket closes when the stream ends");
    let _ = finish(second).await;
    server.stop().await;
}

/// Viewers are spread over the media engines, each on its own UDP port,
/// and play whichever engine they land on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_are_spread_over_the_engines() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| c.webrtc.engines = 2).await;
    let mut publisher = server.publish("live", "spread", 60, "320x180");
    server.master_when_ready("live", "spread").await;
    let url = server.ws_url("/live/spread");
    let port = |v: &Viewer| {
        let c = v.offer["candidates"][0]["candidate"].as_str().unwrap();
        c.split_whitespace().nth(5).unwrap().to_owned()
    };
    let mut ports = Vec::new();
    for _ in 0..2 {
        let mut viewer = Viewer::connect(&url, false).await.expect("an offer");
        ports.push(port(&viewer));
        assert!(
            viewer
                .run_until(Duration::from_secs(10), |ev| matches!(
                    ev,
                    ViewerEvent::Video { keyframe: true, .. }
                ))
                .await,
            "viewer on port {} got no keyframe",
            ports.last().unwrap()
        );
        viewer.stop().await;
    }
    assert_ne!(ports[0], ports[1], "{ports:?}");
    let _ = publisher.kill().await;
    server.stop().await;
}

/// Connects to `url` until a place is free (bounded): a refusal for being
/// full (503) is retried, any other is a failure.
async fn connect_when_free(url: &str) -> Viewer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match Viewer::connect(url, false).await {
            Ok(v) => return v,
            Err(common::webrtc::Refused(e)) if e["code"] == 503 => {
                assert!(tokio::time::Instant::now() < deadline, "never a place: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(common::webrtc::Refused(e)) => panic!("refused: {e}"),
        }
    }
}

/// `max_viewers`: the viewer past it is refused with OME's 503 "Too many
/// viewers", and a place frees when a viewer leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_viewers_refuses_the_next_and_frees_a_place_when_one_leaves() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| c.webrtc.max_viewers = 2).await;
    let mut publisher = server.publish("live", "full", 60, "320x180");
    server.master_when_ready("live", "full").await;
    let url = server.ws_url("/live/full");
    let mut a = Viewer::connect(&url, false)
        .await
        .expect("the first viewer");
    let mut b = Viewer::connect(&url, false)
        .await
        .expect("the second viewer");
    assert!(a.plays().await && b.plays().await);
    match Viewer::connect(&url, false).await {
        Err(common::webrtc::Refused(e)) => {
            assert_eq!(e["code"], 503, "{e}");
            assert!(e.to_string().contains("Too many viewers"), "{e}");
        }
        Ok(_) => panic!("a third viewer got in past max_viewers = 2"),
    }
    a.stop().await;
    let mut c = connect_when_free(&url).await;
    assert!(
        c.plays().await,
        "the viewer that took the freed place got no video"
    );
    assert!(b.plays().await, "the remaining viewer stopped playing");
    let _ = publisher.kill().await;
    server.stop().await;
}

/// A connected viewer that goes silent (no ICE consent checks: a killed
/// tab, a dropped network) is dropped after `ice_timeout`, its place given
/// back and its signalling socket closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gone_silent_is_dropped_after_the_ice_timeout() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(|c| c.webrtc.ice_timeout = Duration::from_secs(2)).await;
    let mut publisher = server.publish("live", "silent", 60, "320x180");
    server.master_when_ready("live", "silent").await;
    let viewers = || server.metric("streamd_webrtc_viewers");
    let before = viewers().await;
    let mut viewer = Viewer::connect(&server.ws_url("/live/silent"), false)
        .await
        .expect("an offer");
    assert!(viewer.plays().await);
    assert_eq!(viewers().await, before + 1.0);
    // Silent from now on: the viewer is not driven at all (no STUN, no
    // RTCP), as if its machine vanished.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while viewers().await > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the silent viewer was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Woken again, it finds its signalling socket closed by the server.
    assert!(
        viewer
            .run_until(Duration::from_secs(5), |ev| matches!(
                ev,
                ViewerEvent::Closed
            ))
            .await,
        "the silent viewer's signalling socket stayed open"
    );
    let _ = publisher.kill().await;
    server.stop().await;
}

/// Plays `viewer` until `n` pictures of `size` were decoded (bounded),
/// collecting the `rendition_changed` notifications on the way; whether it
/// got there, the sizes seen, and the notifications.
async fn play_until_size(
    viewer: &mut Viewer,
    h264: &mut H264,
    size: (u32, u32),
    n: usize,
    timeout: Duration,
) -> (bool, Vec<(u32, u32)>, Vec<Value>) {
    let (mut seen, mut notes, mut hits) = (Vec::new(), Vec::new(), 0);
    let ok = viewer
        .run_until(timeout, |ev| {
            if let Some(m) = notification(ev, "rendition_changed") {
                notes.push(m.clone());
            }
            if let ViewerEvent::Video { data, .. } = ev {
                for p in h264.decode(data) {
                    hits += usize::from(p == size);
                    seen.push(p);
                }
            }
            hits >= n
        })
        .await;
    (ok, seen, notes)
}

/// A rendition named in the path (`/live/{stream}/{rendition}`) is the
/// only one played; `change_rendition` with `auto` is acknowledged and,
/// as the viewer has no bandwidth estimate, holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendition_pinned_by_path_is_the_only_one_played() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(ladder).await;
    let mut publisher = publish(&server, "pin", 40);
    wait_ready(&server, "pin").await;
    let mut viewer = Viewer::connect(&server.ws_url("/live/pin/180p"), false)
        .await
        .expect("an offer for a pinned rendition");
    let mut h264 = H264::new();
    let (ok, seen, _) = play_until_size(
        &mut viewer,
        &mut h264,
        (320, 180),
        30,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "no 180p pictures: {seen:?}");
    assert!(seen.iter().all(|s| *s == (320, 180)), "{seen:?}");
    viewer
        .signal(json!({"command": "change_rendition", "id": viewer.id, "auto": true}))
        .await;
    let (ok, seen, notes) = play_until_size(
        &mut viewer,
        &mut h264,
        (320, 180),
        60,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "{seen:?}");
    assert!(seen.iter().all(|s| *s == (320, 180)), "{seen:?}");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["rendition_name"], "180p", "{notes:?}");
    assert_eq!(notes[0]["auto"], true, "{notes:?}");
    viewer.stop().await;
    // A third segment that names no rendition is OME's playlist name
    // (`/app/stream/abr`): not a pin, the viewer is on automatic ABR.
    let mut other = Viewer::connect(&server.ws_url("/live/pin/abr"), false)
        .await
        .expect("an offer for an OME playlist name");
    let mut h264 = H264::new();
    let (ok, seen, _) = play_until_size(
        &mut other,
        &mut h264,
        (640, 360),
        10,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "not started on the automatic choice (360p): {seen:?}");
    other.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}

/// A viewer that chose a rendition and then goes back to `auto` is told
/// so, and automatic ABR takes over again: on an unlimited loopback its
/// estimate climbs back to the larger rendition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_rendition_back_to_auto_lets_abr_climb_again() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start(ladder).await;
    let mut publisher = publish(&server, "auto", 60);
    wait_ready(&server, "auto").await;
    let mut viewer = Viewer::connect(&server.ws_url("/live/auto"), false)
        .await
        .expect("an offer");
    let mut h264 = H264::new();
    let (ok, seen, _) = play_until_size(
        &mut viewer,
        &mut h264,
        (640, 360),
        30,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "no 360p to start with: {seen:?}");
    viewer
        .signal(json!({"command": "change_rendition", "id": viewer.id, "rendition_name": "180p", "auto": false}))
        .await;
    let (ok, seen, _) = play_until_size(
        &mut viewer,
        &mut h264,
        (320, 180),
        30,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "no 180p after choosing it: {seen:?}");
    viewer
        .signal(json!({"command": "change_rendition", "id": viewer.id, "auto": true}))
        .await;
    let (ok, seen, notes) = play_until_size(
        &mut viewer,
        &mut h264,
        (640, 360),
        30,
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "ABR never climbed back to 360p: {notes:?}");
    assert_eq!(
        notes.first().map(|n| &n["auto"]),
        Some(&json!(true)),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n["rendition_name"] == "360p" && n["auto"] == true),
        "{notes:?}"
    );
    let first_big = seen.iter().position(|s| *s == (640, 360)).unwrap();
    assert!(
        seen[first_big..].iter().all(|s| *s == (640, 360)),
        "it climbed and fell back: {seen:?}"
    );
    viewer.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}

/// Two network namespaces' worth of link for one viewer: a veth pair from
/// this namespace (198.18.0.1, where streamd's WebRTC listens) to a new
/// one (198.18.0.2, the viewer's), whose server side can be shaped with
/// `tc ... tbf` (the rate the viewer receives at). Removed when dropped.
struct ShapedLink {
    ns: String,
    dev: String,
}

impl ShapedLink {
    fn new() -> ShapedLink {
        let id = std::process::id() % 100_000;
        let (ns, dev, peer) = (
            format!("sd-abr-{id}"),
            format!("sdA{id}"),
            format!("sdB{id}"),
        );
        let link = ShapedLink {
            ns: ns.clone(),
            dev: dev.clone(),
        };
        for cmd in [
            format!("ip netns add {ns}"),
            format!("ip link add {dev} type veth peer name {peer}"),
            format!("ip link set {peer} netns {ns}"),
            format!("ip addr add 198.18.0.1/30 dev {dev}"),
            format!("ip link set {dev} up"),
            format!("ip netns exec {ns} ip addr add 198.18.0.2/30 dev {peer}"),
            format!("ip netns exec {ns} ip link set {peer} up"),
            format!("ip netns exec {ns} ip link set lo up"),
        ] {
            link.run(&cmd);
        }
        link
    }

    fn run(&self, cmd: &str) {
        common::cluster::sh(cmd);
    }

    /// Limits what the viewer receives to `kbit` per second (tbf), or
    /// lifts the limit.
    fn limit(&self, kbit: Option<u32>) {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", &self.dev, "root"])
            .output();
        if let Some(k) = kbit {
            self.run(&format!(
                "tc qdisc add dev {} root tbf rate {k}kbit burst 16kb latency 200ms",
                self.dev
            ));
        }
    }

    /// A UDP socket bound to the viewer's address, inside its namespace.
    fn viewer_socket(&self) -> tokio::net::UdpSocket {
        let ns = format!("/var/run/netns/{}", self.ns);
        let socket = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&ns).expect("the namespace");
            // SAFETY: setns on this thread only, with a namespace fd kept
            // open for the call; the socket keeps its namespace afterwards.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            std::net::UdpSocket::bind("198.18.0.2:0").expect("bind in the namespace")
        })
        .join()
        .unwrap();
        socket.set_nonblocking(true).unwrap();
        tokio::net::UdpSocket::from_std(socket).unwrap()
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.dev])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .output();
    }
}

/// Automatic ABR end to end: a viewer whose link is cut to 400 kbit/s
/// (tbf, in its own network namespace) is moved down from 360p (600 kbit/s)
/// to 180p by its bandwidth estimate, skipping ahead to a keyframe while
/// its send queue is backed up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_abr_follows_the_viewers_bandwidth() {
    let _serial = SERIAL.lock().await;
    let link = ShapedLink::new();
    let server = TestServer::start(|c| {
        ladder(c);
        c.transcode.keyframe_interval = Duration::from_secs(2);
        c.webrtc.udp_listen = "198.18.0.1:0".parse().unwrap();
        c.webrtc.candidate_ips = vec!["198.18.0.1".into()];
    })
    .await;
    let mut publisher = publish(&server, "abr", 90);
    wait_ready(&server, "abr").await;
    let mut viewer = Viewer::connect_on(&server.ws_url("/live/abr"), false, link.viewer_socket())
        .await
        .expect("an offer");
    let mut h264 = H264::new();
    let (ok, seen, _) = play_until_size(
        &mut viewer,
        &mut h264,
        (640, 360),
        30,
        Duration::from_secs(15),
    )
    .await;
    assert!(ok, "no 360p through the link to start with: {seen:?}");

    let skips = "streamd_webrtc_keyframe_skips_total";
    let skips_before = server.metric(skips).await;
    link.limit(Some(400));
    let (ok, seen, notes) = play_until_size(
        &mut viewer,
        &mut h264,
        (320, 180),
        30,
        Duration::from_secs(40),
    )
    .await;
    assert!(ok, "never moved down to 180p at 400 kbit/s: {notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n["rendition_name"] == "180p" && n["auto"] == true),
        "{notes:?}"
    );
    let down = seen.iter().position(|s| *s == (320, 180)).unwrap();
    eprintln!("moved down after {down} pictures at 400 kbit/s");
    // Until the estimate caught up, 600 kbit/s did not fit: the viewer's
    // send queue backed up and it skipped ahead to a keyframe rather than
    // fall further behind.
    let skipped = server.metric(skips).await - skips_before;
    assert!(
        skipped >= 1.0,
        "the backed-up viewer never skipped to a keyframe"
    );

    // (Climbing back once the limit is lifted is not asserted: after a
    // loss-driven cut the estimate recovered within 40 s in 3 runs of 4,
    // not in the fourth. change_rendition_back_to_auto_lets_abr_climb_again
    // covers the climb on a fresh estimate.)
    viewer.stop().await;
    let _ = publisher.kill().await;
    server.stop().await;
}
