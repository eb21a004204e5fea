//! WHIP ingest end to end, against real publishers and players:
//! - FFmpeg 9's WHIP muxer (the static build in the `imageio-ffmpeg` PyPI
//!   package, installed into tests/python/.venv by the README's test
//!   command; without it these tests fail, they do not skip) publishes
//!   H.264 and Opus;
//! - the stream is then served over LL-HLS through the ladder, and over
//!   WebRTC to a str0m viewer that decodes the ladder's H.264 and the
//!   publisher's own Opus;
//! - bad offers, bad credentials and a second publisher get clear HTTP
//!   errors while a witness stream plays on.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::webrtc::{Viewer, ViewerEvent, decode_until};
use common::*;
use streamd::bus::StreamPath;
use streamd::media::CodecConfig;
use tokio::process::{Child, Command};

/// Transcoding takes most of both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `seconds` of a 640x360 test pattern with a tone, H.264 constrained
/// baseline (no B-frames, as WHIP publishers send) and stereo Opus, to
/// `url` over WHIP with `bearer`.
fn whip_publish(url: &str, seconds: u32, bearer: Option<&str>) -> Child {
    let mut cmd = Command::new(ffmpeg9());
    cmd.args(["-hide_banner", "-loglevel", "warning", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", &seconds.to_string()])
        .args([
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-preset",
            "veryfast",
        ])
        .args([
            "-pix_fmt", "yuv420p", "-bf", "0", "-g", "30", "-b:v", "600k",
        ])
        .args(["-c:a", "libopus", "-ac", "2", "-b:a", "64k"]);
    if let Some(b) = bearer {
        cmd.args(["-authorization", b]);
    }
    cmd.args(["-f", "whip", url])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg 9 starts")
}

fn whip_url(server: &TestServer, stream: &str) -> String {
    server.url(&format!("/live/{stream}/whip"))
}

#[tokio::test]
async fn ffmpeg_publishes_over_whip_to_llhls_and_webrtc() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let mut publisher = whip_publish(&whip_url(&server, "w"), 40, None);
    wait_tracks(
        &server,
        "live",
        "w",
        &["video", "audio", "360p", "180p", "aac"],
    )
    .await;

    // The publisher's own Opus is the WebRTC audio (no AAC-to-Opus
    // transcoder runs); LL-HLS gets it transcoded to AAC.
    let path = StreamPath::new("live", "w").unwrap();
    let broadcast = server.registry.get(&path).unwrap();
    let tracks = broadcast.snapshot().tracks;
    assert!(!tracks.iter().any(|t| t.name == "opus"), "{tracks:?}");
    let mut catalog = None;
    for _ in 0..100 {
        catalog = broadcast.catalog().filter(|c| c.complete);
        if catalog.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let catalog = catalog.expect("the catalog completes");
    assert_eq!(
        catalog.webrtc_audio.as_deref(),
        Some("audio"),
        "{catalog:?}"
    );
    assert_eq!(catalog.audio.as_deref(), Some("aac"), "{catalog:?}");
    let mut audio = broadcast
        .subscribe("audio", None)
        .expect("the publisher's audio track");
    let ev = loop {
        match audio.next().await.expect("audio frames") {
            streamd::bus::TrackEvent::Frame(ev) => break ev,
            streamd::bus::TrackEvent::Interrupted => continue,
        }
    };
    let CodecConfig::Opus(opus_config) = (*ev.group.config).clone() else {
        panic!("the WHIP audio is Opus: {:?}", ev.group.config)
    };
    assert_eq!(opus_config.channels, 2);

    // LL-HLS: the ladder's video is served and advances.
    let master = server.master_when_ready("live", "w").await.text();
    assert!(master.contains("RESOLUTION=640x360"), "{master}");
    assert!(master.contains("mp4a.40.2"), "AAC in the master: {master}");
    assert_aac_decodes(&server, "w", &master).await;
    let top = media_playlists(&master)
        .into_iter()
        .find(|u| u.starts_with("360p"))
        .expect("the 360p rung's playlist");
    let url = server.url(&format!("/live/w/{top}"));
    let parts = |t: &str| t.lines().filter(|l| l.starts_with("#EXT-X-PART:")).count();
    let before = get(&url).await.text();
    let last = |t: &str| {
        t.lines()
            .rfind(|l| l.starts_with("#EXT-X-PART:"))
            .map(str::to_owned)
    };
    let was = last(&before);
    let after = poll(&url, Duration::from_secs(15), |r| {
        r.status == 200 && last(&r.text()) != was
    })
    .await;
    assert!(parts(&after.text()) > 0, "{}", after.text());

    // WebRTC: a viewer decodes the ladder's H.264 and the publisher's Opus.
    let mut viewer = Viewer::connect(&server.ws_url("/live/w"), false)
        .await
        .expect("an offer");
    let mut opus = opus_decoder(&opus_config);
    let (ok, got) = decode_until(&mut viewer, &mut opus, 30, 48_000, Duration::from_secs(15)).await;
    assert!(ok, "the WebRTC viewer decoded only {got:?}");
    let size = got.size;
    // The viewer starts on the rung its start bitrate allows.
    assert_eq!(size, (640, 360));
    viewer.stop().await;
    publisher.kill().await.ok();
    server.stop().await;
}

/// An app that does not transcode serves the WHIP publisher's H.264 as it
/// came, to LL-HLS and WebRTC; its Opus still becomes AAC for LL-HLS.
#[tokio::test]
async fn without_a_ladder_the_source_is_served_and_opus_still_becomes_aac() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(|c| c.bus.reconnect_grace = Duration::from_secs(1)).await;
    let mut publisher = whip_publish(&whip_url(&server, "p"), 10, None);
    wait_tracks(&server, "live", "p", &["video", "audio", "aac"]).await;
    let master = server.master_when_ready("live", "p").await.text();
    assert!(
        master.contains("avc1.42"),
        "the source's baseline H.264: {master}"
    );
    assert!(master.contains("mp4a.40.2"), "{master}");
    assert_aac_decodes(&server, "p", &master).await;
    let mut viewer = Viewer::connect(&server.ws_url("/live/p"), false)
        .await
        .expect("an offer");
    let (mut video, mut audio) = (0, 0);
    let ok = viewer
        .run_until(Duration::from_secs(15), |ev| {
            match ev {
                ViewerEvent::Video { .. } => video += 1,
                ViewerEvent::Audio { .. } => audio += 1,
                _ => {}
            }
            video >= 30 && audio >= 50
        })
        .await;
    assert!(
        ok,
        "the WebRTC viewer got {video} video and {audio} audio frames"
    );
    viewer.stop().await;

    // ffmpeg ends its session with DELETE; the recording is then ready and
    // its MP4 holds the H.264 and the AAC, start to end.
    let status = tokio::time::timeout(Duration::from_secs(20), publisher.wait())
        .await
        .expect("ffmpeg ends")
        .unwrap();
    assert!(status.success(), "ffmpeg 9's WHIP publish failed");
    let token = format!(
        "Bearer {}",
        server
            .access
            .auth
            .mint_api("test", Duration::from_secs(600))
    );
    let mut ready = None;
    for _ in 0..120 {
        let r = request(
            "GET",
            &server.url("/api/recordings?stream=live/p"),
            &[("authorization", &token)],
        )
        .await;
        let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if let Some(rec) = list.as_array().and_then(|l| l.first())
            && rec["status"] == "ready"
        {
            ready = rec["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let id = ready.expect("the WHIP stream's recording becomes ready");
    let mp4 = server.url(&format!("/vod/{id}/recording.mp4"));
    // Every frame of the 10 s publish: 300 pictures at 30 fps, and 10 s of
    // AAC (1024 samples a frame at 48 kHz, 469), less what the WHIP
    // handshake held back. (Counted: ffprobe's duration of a fragmented
    // MP4 over HTTP is an estimate from its first fragments.)
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_name,nb_read_packets",
            "-of",
            "csv=p=0",
            &mp4,
        ],
    )
    .await;
    assert!(ok, "ffprobe {mp4}: {err}");
    let packets = |codec: &str| -> u32 {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{codec},")))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {codec} in the recording: {out}"))
    };
    assert!(packets("h264") >= 280, "{out}");
    assert!(packets("aac") >= 420, "{out}");
    let (ok, _, err) = run(
        "ffmpeg",
        &[
            "-v", "error", "-nostdin", "-i", &mp4, "-map", "0", "-f", "null", "-",
        ],
    )
    .await;
    assert!(ok && err.trim().is_empty(), "decoding the recording: {err}");
    server.stop().await;
}

/// The LL-HLS audio rendition's init and first segment decode as 48 kHz
/// stereo AAC with FFmpeg: the Opus-to-AAC transcoder's output is real
/// audio, not just a listed track.
async fn assert_aac_decodes(server: &TestServer, stream: &str, master: &str) {
    let audio = media_playlists(master)
        .into_iter()
        .find(|u| u.starts_with("aac"))
        .unwrap_or_else(|| panic!("an audio playlist in {master}"));
    let url = server.url(&format!("/live/{stream}/{audio}"));
    let playlist = poll(&url, Duration::from_secs(20), |r| {
        r.status == 200 && r.text().lines().any(|l| l.starts_with("#EXTINF"))
    })
    .await
    .text();
    let map = playlist
        .lines()
        .find_map(|l| attr(l, "URI").filter(|_| l.starts_with("#EXT-X-MAP")))
        .expect("an EXT-X-MAP");
    let segment = playlist
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .expect("a segment");
    let mut file = get(&server.url(&format!("/live/{stream}/{map}")))
        .await
        .body
        .to_vec();
    file.extend_from_slice(
        &get(&server.url(&format!("/live/{stream}/{segment}")))
            .await
            .body,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audio.mp4");
    std::fs::write(&path, &file).unwrap();
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,sample_rate,channels,nb_read_frames",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "ffprobe: {err}");
    let fields: Vec<&str> = out.trim().split(',').collect();
    assert_eq!(&fields[..3], ["aac", "48000", "2"], "{out}");
    let frames: u32 = fields[3].parse().unwrap();
    assert!(frames >= 40, "a segment of AAC frames decodes: {out}");
}

/// A real-looking offer (FFmpeg 9's, candidates and all) for `video` and
/// `audio` codecs as given.
fn offer(video_codec: &str, with_audio: bool) -> String {
    let mut sdp = String::from(
        "v=0\r\no=FFmpeg 4489045141692799359 2 IN IP4 127.0.0.1\r\ns=FFmpegPublishSession\r\nt=0 0\r\n",
    );
    let mids = if with_audio { "0 1" } else { "1" };
    sdp.push_str(&format!(
        "a=group:BUNDLE {mids}\r\na=msid-semantic: WMS\r\n"
    ));
    let common = "c=IN IP4 0.0.0.0\r\na=ice-ufrag:be76892c\r\na=ice-pwd:38769dd066d05368ef6a98cb871ada2b\r\n\
a=fingerprint:sha-256 DB:F1:BE:BB:DD:BE:FB:FE:A3:62:D7:B0:C1:0B:DA:B7:E6:DB:4C:9B:EA:52:23:D9:B0:20:88:A6:E9:8A:8E:22\r\n\
a=setup:passive\r\n";
    if with_audio {
        sdp.push_str("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n");
        sdp.push_str(common);
        sdp.push_str("a=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:369817148 cname:FFmpeg\r\n");
    }
    sdp.push_str("m=video 9 UDP/TLS/RTP/SAVPF 106\r\n");
    sdp.push_str(common);
    sdp.push_str("a=mid:1\r\na=sendonly\r\na=rtcp-mux\r\n");
    match video_codec {
        "H264" => sdp.push_str(
            "a=rtpmap:106 H264/90000\r\na=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001e\r\n",
        ),
        other => sdp.push_str(&format!("a=rtpmap:106 {other}/90000\r\n")),
    }
    sdp.push_str("a=ssrc:369817149 cname:FFmpeg\r\n");
    sdp
}

async fn post_offer(
    server: &TestServer,
    path: &str,
    bearer: Option<&str>,
    body: String,
) -> Response {
    let auth = bearer.map(|b| format!("Bearer {b}"));
    let mut headers = vec![("content-type", "application/sdp")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    request_with("POST", &server.url(path), &headers, body).await
}

/// Every bad request gets its own clear error, and a live RTMP stream
/// (the witness) plays on; DELETE ends a session and only its own.
#[tokio::test]
async fn whip_refuses_bad_requests_and_delete_ends_only_its_session() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(|c| {
        c.auth.publish = streamd::config::PublishPolicy::Key;
        c.whip.max_publishers_per_ip = 2;
    })
    .await;
    let store = &server.access.store;
    let (cam, key) = store
        .create("live", "cam", "", false)
        .await
        .expect("a managed stream");
    let witness = server.publish("live", &format!("{}?key={key}", cam.id), 60, "320x240");
    server.master_when_ready("live", &cam.id).await;
    let at = format!("/live/{}/whip", cam.id);

    // Credentials: none, a wrong key, a forged token, a malformed header.
    let r = post_offer(&server, &at, None, offer("H264", true)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_offer(&server, &at, Some("wrong-key"), offer("H264", true)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = post_offer(&server, &at, Some("e30.e30.c2ln"), offer("H264", true)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let r = request_with(
        "POST",
        &server.url(&at),
        &[
            ("content-type", "application/sdp"),
            ("authorization", "Basic Zm9vOmJhcg=="),
        ],
        offer("H264", true),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // The right key, but the stream is live: refused as RTMP refuses it.
    let r = post_offer(&server, &at, Some(&key), offer("H264", true)).await;
    assert_eq!(r.status, 409, "{}", r.text());

    // Bad offers, on a stream of its own (the key names it).
    let (other, k2) = store
        .create("live", "other", "", false)
        .await
        .expect("a second stream");
    let at = format!("/live/{}/whip", other.id);
    let at = at.as_str();
    let r = post_offer(&server, at, Some(&k2), "not sdp at all".into()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned();
    let r = post_offer(&server, at, Some(&k2), no_media).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_offer(&server, at, Some(&k2), offer("VP8", false)).await;
    assert_eq!(r.status, 406, "{}", r.text());
    // Simulcast beyond the four layers a publisher may send.
    let rids = ["a", "b", "c", "d", "e"];
    let mut layers = String::from("a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n");
    for rid in rids {
        layers.push_str(&format!("a=rid:{rid} send\r\n"));
    }
    layers.push_str(&format!("a=simulcast:send {}\r\n", rids.join(";")));
    let r = post_offer(&server, at, Some(&k2), offer("H264", false) + &layers).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("5 simulcast layers"), "{}", r.text());
    let r = post_offer(&server, at, Some(&k2), "v=0\r\n".repeat(20_000)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let r = request_with(
        "POST",
        &server.url(at),
        &[
            ("content-type", "text/plain"),
            ("authorization", &format!("Bearer {k2}")),
        ],
        offer("H264", true),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    // None of that made a broadcast.
    let other_path = StreamPath::new("live", &other.id).unwrap();
    assert!(server.registry.get(&other_path).is_none());

    // A good offer makes a session, and the broadcast with it.
    let r = post_offer(&server, at, Some(&k2), offer("H264", true)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    assert!(r.text().contains("a=setup:active"), "{}", r.text());
    assert!(r.text().contains("a=candidate:"), "{}", r.text());
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.starts_with(&format!("{at}/")), "{location}");
    assert!(r.header("etag").is_some());
    assert!(server.registry.get(&other_path).is_some());

    assert_eq!(
        r.header("accept-patch"),
        Some("application/trickle-ice-sdpfrag")
    );

    // PATCH: trickle ICE with the offer's credentials and the entity-tag;
    // a stale tag, other credentials, a wrong type or another stream's
    // path are refused; an ICE restart (If-Match: *) answers new
    // credentials and a new tag, which the old one no longer matches.
    let resource = location.rsplit('/').next().unwrap();
    let etag = r.header("etag").unwrap().to_owned();
    const FRAG: &str = common::webrtc::FRAGMENT;
    let creds = "a=ice-ufrag:be76892c\r\na=ice-pwd:38769dd066d05368ef6a98cb871ada2b\r\n";
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n";
    use common::webrtc::patch;
    let here = server.url(&location);
    let elsewhere = server.url(&format!("/live/{}/whip/{resource}", cam.id));
    for (url, content_type, if_match, body, status) in [
        (
            here.clone(),
            "text/plain",
            etag.clone(),
            format!("{creds}{candidate}"),
            415,
        ),
        (
            here.clone(),
            FRAG,
            "\"stale\"".into(),
            format!("{creds}{candidate}"),
            412,
        ),
        (
            here.clone(),
            FRAG,
            etag.clone(),
            format!(
                "a=ice-ufrag:zzzz\r\na=ice-pwd:{}\r\n{candidate}",
                "q".repeat(24)
            ),
            422,
        ),
        (
            here.clone(),
            FRAG,
            etag.clone(),
            "\u{0}\u{1}binary".into(),
            400,
        ),
        (
            elsewhere.clone(),
            FRAG,
            etag.clone(),
            format!("{creds}{candidate}"),
            404,
        ),
        (
            here.clone(),
            FRAG,
            etag.clone(),
            format!("{creds}{candidate}a=end-of-candidates\r\n"),
            204,
        ),
    ] {
        let r = patch(url, content_type, if_match.clone(), body).await;
        assert_eq!(r.status, status, "{content_type} {if_match}: {}", r.text());
    }
    let restart = format!(
        "a=ice-ufrag:n3wufrag\r\na=ice-pwd:{}\r\n{candidate}",
        "n".repeat(24)
    );
    let r = patch(here.clone(), FRAG, "*".into(), restart).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some(FRAG));
    let answer = r.text();
    assert!(answer.contains("a=ice-ufrag:w"), "{answer}");
    assert!(answer.contains("a=ice-pwd:"), "{answer}");
    assert!(answer.contains("a=candidate:"), "{answer}");
    assert!(answer.contains("a=mid:0"), "{answer}");
    let new_etag = r.header("etag").expect("a new ETag").to_owned();
    assert_ne!(new_etag, etag);
    let r = patch(here.clone(), FRAG, etag.clone(), candidate.into()).await;
    assert_eq!(r.status, 412, "{}", r.text());
    // Trickling now takes the restarted credentials, not the offer's.
    let r = patch(
        here.clone(),
        FRAG,
        new_etag.clone(),
        format!("{creds}{candidate}"),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = patch(here.clone(), FRAG, new_etag, candidate.into()).await;
    assert_eq!(r.status, 204, "{}", r.text());

    // DELETE on another stream's path or a made-up resource finds
    // nothing; the right one ends it.
    let r = request(
        "DELETE",
        &server.url(&format!("/live/{}/whip/{resource}", cam.id)),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = request("DELETE", &server.url(&format!("{at}/not-a-session")), &[]).await;
    assert_eq!(r.status, 404);
    let r = request("DELETE", &server.url(&location), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request("DELETE", &server.url(&location), &[]).await;
    assert_eq!(r.status, 404);
    let b = server.registry.get(&other_path);
    assert!(
        b.is_none_or(|b| b.status() != streamd::bus::BroadcastStatus::Live { session: 0 }),
        "the deleted session's broadcast is no longer live"
    );

    // OME's form of the URL takes a publisher too (the stream is free
    // again); a GET there is still no WHIP.
    let ome = format!("/live/{}?direction=whip", other.id);
    let r = post_offer(&server, &ome, Some(&k2), offer("H264", true)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.header("location")
            .is_some_and(|l| l.starts_with(&format!("{at}/")))
    );
    assert_eq!(get(&server.url(&ome)).await.status, 404);

    // One address holds at most whip.max_publishers_per_ip (2) sessions,
    // connected or not: a second one fits, a third is refused.
    let (third, k3) = store.create("live", "third", "", false).await.unwrap();
    let r = post_offer(
        &server,
        &format!("/live/{}/whip", third.id),
        Some(&k3),
        offer("H264", true),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (fourth, k4) = store.create("live", "fourth", "", false).await.unwrap();
    let r = post_offer(
        &server,
        &format!("/live/{}/whip", fourth.id),
        Some(&k4),
        offer("H264", true),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.text());

    // OPTIONS says what the endpoint takes; CORS lets a browser POST.
    let r = request(
        "OPTIONS",
        &server.url(at),
        &[
            ("origin", "https://studio.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
    )
    .await;
    assert!(r.status.is_success(), "{}", r.status);
    let methods = r.header("access-control-allow-methods").unwrap_or("");
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );

    // The witness was never disturbed.
    stream_advances(&server, "live", &cam.id, Duration::from_secs(10)).await;
    drop(witness);
    server.stop().await;
}

/// Chromium publishing AV1 over WHIP (its only video codec in the offer):
/// the ladder decodes it (libdav1d) into H.264, LL-HLS offers the AV1 as it
/// came beside the rung, and hls.js plays.
#[tokio::test]
async fn chromium_publishes_av1_over_whip_through_the_ladder() {
    let _one = SERIAL.lock().await;
    let (r, err) = chromium_whip("av1", 8, &[("WHIP_VIDEO_CODEC", "AV1")]).await;
    eprintln!("Chromium WHIP (AV1): {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}\n{err}");
    assert_eq!(r["whip"]["connectionState"], "connected", "{r}");
    let video = r["outbound"]
        .as_array()
        .expect("outbound stats")
        .iter()
        .find(|o| o["kind"] == "video")
        .cloned()
        .expect("video sent");
    assert_eq!(video["codec"], "video/AV1", "{r}");
    let master = r["master"].as_str().unwrap_or("");
    assert!(
        master.contains("av01.") && master.contains("avc1.") && master.contains("mp4a.40.2"),
        "the AV1 as it came beside the H.264 rung: {master}"
    );
    assert_eq!(r["playing"], true, "hls.js played: {r}\n{err}");
}

/// Chromium publishes its fake camera and microphone over WHIP from a page
/// of another origin (RTCPeerConnection and fetch, as a browser WHIP client
/// does), and hls.js plays the stream back over LL-HLS through the ladder,
/// with the Opus transcoded to AAC; DELETE ends the session. All inside a
/// loopback-only network namespace (tests/browser/netns.sh).
#[tokio::test]
async fn chromium_publishes_over_whip_and_hlsjs_plays_it() {
    let _one = SERIAL.lock().await;
    let token = netns_api_token();
    let env = [
        ("WHIP_OVENPLAYER", "6"),
        ("WHIP_RECORDING_TOKEN", token.as_str()),
    ];
    let (r, err) = chromium_whip("browser", 8, &env).await;
    eprintln!("Chromium WHIP: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}\n{err}");
    assert_eq!(r["whip"]["status"], 201, "{r}");
    assert_eq!(r["whip"]["connectionState"], "connected", "{r}");
    let outbound = r["outbound"].as_array().expect("outbound stats");
    let video = outbound
        .iter()
        .find(|o| o["kind"] == "video")
        .expect("video sent");
    assert_eq!(video["codec"], "video/H264", "the answer chose H.264: {r}");
    assert!(video["framesEncoded"].as_u64().unwrap() > 100, "{r}");
    let audio = outbound
        .iter()
        .find(|o| o["kind"] == "audio")
        .expect("audio sent");
    assert_eq!(audio["codec"], "audio/opus", "{r}");
    let master = r["master"].as_str().unwrap_or("");
    assert!(
        master.contains("avc1.") && master.contains("mp4a.40.2"),
        "{master}"
    );
    assert_eq!(
        r["playing"], true,
        "hls.js played the WHIP stream: {r}\n{err}"
    );
    // The playlists went on to the end of the run: each media playlist's
    // last part is in its fourth segment (2 s each) or later.
    let tails = r["playlistTails"].as_object().expect("playlist tails");
    assert_eq!(tails.len(), 2, "the video and the AAC playlists: {r}");
    for (uri, tail) in tails {
        let lines: Vec<&str> = tail
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l.as_str())
            .collect();
        let msn = lines
            .iter()
            .rev()
            .filter_map(|l| l.split("URI=\"").nth(1))
            .find_map(|u| u.split('_').nth(2)?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(msn >= 3, "{uri} stopped early: {lines:?}");
    }
    assert_eq!(r["hls"]["width"], 320, "hls.js plays the 180p rung: {r}");
    assert!(r["hls"]["audioTracks"].as_u64().unwrap() >= 1, "{r}");
    // OvenPlayer plays it over WebRTC: the ladder's H.264 and the
    // publisher's Opus as it came.
    let op = &r["ovenplayer"];
    assert_eq!(
        op["playing"], true,
        "OvenPlayer played the WHIP stream: {op}"
    );
    assert_eq!(op["videoCodec"], "video/H264", "{op}");
    assert_eq!(op["width"], 320, "the 180p rung: {op}");
    assert_eq!(op["audioCodec"], "audio/opus", "{op}");
    // Its recording: ready once the publisher left, with the rung's H.264
    // and the AAC made from the Opus, every frame of which FFmpeg decodes.
    let rec = &r["recording"];
    assert_eq!(rec["status"], "ready", "{rec}");
    let frames = |codec: &str| -> u64 {
        rec["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l.as_str())
            .filter(|l| l.starts_with(&format!("{codec},")))
            .find_map(|l| l.rsplit(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    // 8 s and more of hls.js, OvenPlayer and the restart at 30 fps, and
    // AAC at 47 frames a second.
    assert!(frames("h264") >= 300, "{rec}");
    let rung = rec["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str())
        .any(|l| l.starts_with("h264,320,"));
    assert!(rung, "the 180p rung is recorded: {rec}");
    assert!(frames("aac") >= 400, "{rec}");
    assert_eq!(rec["decoded"], true, "{rec}");
    assert_eq!(rec["decodeErrors"], "", "{rec}");
    // The ICE restart by PATCH: a new pair, checked with the new
    // credentials (Chromium keeps the old one until a new one succeeds),
    // and video on over it.
    let restart = &r["restart"];
    assert_eq!(restart["status"], 200, "{r}");
    assert!(
        restart["after"].is_string() && restart["after"] != restart["before"],
        "{r}"
    );
    assert_eq!(restart["pairState"], "succeeded", "{r}");
    assert!(
        restart["responsesReceived"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );
    assert!(restart["packetsAfter"].as_u64().unwrap_or(0) > 10, "{r}");
    assert_eq!(restart["connectionState"], "connected", "{r}");
    assert_eq!(r["deleteStatus"], 200, "{r}");
}

/// Chromium publishes its fake camera at 1280x720 as three simulcast
/// layers (full, half and quarter size) to an app with a ladder. The
/// layers are served as they came, not transcoded: OME signalling lists
/// three renditions, largest first, each with its measured bitrate; a WHEP
/// viewer pinned to each decodes that layer's picture; the LL-HLS master
/// has the three (and no ladder rung), with the Opus as AAC, and hls.js
/// plays it.
#[tokio::test]
async fn chromium_publishes_simulcast_over_whip_and_the_layers_are_the_renditions() {
    let _one = SERIAL.lock().await;
    let (r, err) = chromium_whip(
        "layers",
        6,
        &[("WHIP_SIMULCAST", "1"), ("WHIP_OVENPLAYER", "6")],
    )
    .await;
    eprintln!("Chromium WHIP simulcast: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}\n{err}");
    assert_eq!(r["whip"]["connectionState"], "connected", "{r}");
    let sim = &r["simulcast"];
    let layers = sim["layers"].as_array().expect("layer stats");
    let mut rids: Vec<&str> = layers.iter().filter_map(|l| l["rid"].as_str()).collect();
    rids.sort_unstable();
    assert_eq!(rids, ["h", "l", "m"], "Chromium sent three layers: {sim}");
    // What OME signalling lists: three renditions, largest first, each
    // with a measured bitrate, the larger costing more.
    let renditions = sim["playlist"]["renditions"]
        .as_array()
        .unwrap_or_else(|| panic!("a playlist: {sim}"));
    assert_eq!(renditions.len(), 3, "{sim}");
    let video = |r: &serde_json::Value, k: &str| r["video_track"]["video"][k].as_u64().unwrap_or(0);
    let widths: Vec<u64> = renditions.iter().map(|r| video(r, "width")).collect();
    let rates: Vec<u64> = renditions.iter().map(|r| video(r, "bitrate")).collect();
    assert!(
        widths.windows(2).all(|w| w[0] > w[1]) && widths[2] > 0,
        "three sizes, largest first: {widths:?}"
    );
    assert!(
        rates.iter().all(|b| *b > 0) && rates[0] > rates[2],
        "measured bitrates, the largest layer's above the smallest's: {rates:?}"
    );
    // A WHEP viewer pinned to each rendition decodes that layer.
    for (rendition, width) in renditions.iter().zip(&widths) {
        let name = rendition["name"].as_str().unwrap();
        let w = &sim["whep"][name];
        assert_eq!(w["status"], 201, "{name}: {w}");
        assert_eq!(w["playing"], true, "{name}: {w}");
        assert_eq!(w["codec"], "video/H264", "{name}: {w}");
        assert_eq!(
            w["width"].as_u64(),
            Some(*width),
            "{name} is its layer: {w}"
        );
    }
    // LL-HLS: the three layers (no ladder rung) and the AAC; hls.js plays.
    let master = r["master"].as_str().unwrap_or("");
    assert_eq!(
        master.matches("#EXT-X-STREAM-INF").count(),
        3,
        "the layers, not the ladder: {master}"
    );
    // In the catalog's order, largest first, whichever layer started first.
    let sizes: Vec<String> = renditions
        .iter()
        .zip(&widths)
        .map(|(r, w)| format!("{w}x{}", video(r, "height")))
        .collect();
    let listed: Vec<&str> = master
        .split("RESOLUTION=")
        .skip(1)
        .filter_map(|s| s.split(',').next())
        .collect();
    assert_eq!(listed, sizes, "{master}");
    assert!(master.contains("mp4a.40.2"), "{master}");
    assert_eq!(r["playing"], true, "hls.js played: {r}\n{err}");
    // OvenPlayer plays over WebRTC and offers the three layers.
    let op = &r["ovenplayer"];
    assert_eq!(op["playing"], true, "OvenPlayer played the layers: {op}");
    assert_eq!(
        op["qualityLevels"].as_array().map(Vec::len),
        Some(3),
        "OvenPlayer's quality levels are the layers: {op}"
    );
}

/// ICE-TCP for publishers (OME's `?transport=tcp`): the answer offers only
/// the passive ICE-TCP candidate of the viewers' listener (3478), which
/// routes the connection to WHIP by its ufrag; Chromium publishes over it,
/// restarts ICE over it, and hls.js plays the stream.
#[tokio::test]
async fn chromium_publishes_over_ice_tcp() {
    let _one = SERIAL.lock().await;
    let (r, err) = chromium_whip("tcp", 6, &[("WHIP_TRANSPORT", "tcp")]).await;
    eprintln!("Chromium WHIP over ICE-TCP: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}\n{err}");
    assert_eq!(r["whip"]["connectionState"], "connected", "{r}");
    let remote = r["whip"]["pair"]["remote"].as_str().unwrap_or("");
    assert!(
        remote.starts_with("127.0.0.1:3478/tcp host"),
        "the selected pair is ICE-TCP: {r}"
    );
    assert_eq!(r["playing"], true, "hls.js played: {r}\n{err}");
    // An ICE restart over TCP: a new connection with the new ufrag.
    let restart = &r["restart"];
    assert_eq!(restart["status"], 200, "{restart}");
    assert!(
        restart["after"].is_string() && restart["after"] != restart["before"],
        "the restart made a new pair: {restart}"
    );
    assert_eq!(restart["pairState"], "succeeded", "{restart}");
    assert!(
        restart["packetsAfter"].as_u64().unwrap_or(0) > 0,
        "{restart}"
    );
}

/// The root secret of the streamd that `chromium_whip` runs.
const NETNS_SECRET: &str = "a-root-secret-for-the-netns-whip-runs-0123456789";

/// An API token for that streamd.
fn netns_api_token() -> String {
    streamd::auth::Auth::new(NETNS_SECRET, streamd::config::AuthConfig::default())
        .mint_api("test", Duration::from_secs(600))
}

/// Chromium publishing over WHIP to `/live/{stream}` through a one-rung
/// ladder (180p), inside the loopback-only namespace (tests/browser/netns.sh and
/// whip_publish.mjs, given `env`), then hls.js playing it for `seconds`:
/// the script's report and streamd's log.
async fn chromium_whip(
    stream: &str,
    seconds: u32,
    env: &[(&str, &str)],
) -> (serde_json::Value, String) {
    browser_dir();
    let dir = tempfile::tempdir().unwrap();
    // A rung smaller than the publishers' 640x360, so that what players
    // get can be told from the source.
    let config = netns_config(dir.path(), &[("180p", 320, 180, 300)]);
    // A known root secret, so that the test can mint API tokens.
    let text = std::fs::read_to_string(&config).unwrap();
    let with_secret = text.replacen(
        "[auth]\n",
        &format!("[auth]\njwt_secret = \"{NETNS_SECRET}\"\n"),
        1,
    );
    assert_ne!(text, with_secret, "netns_config has an [auth] table");
    std::fs::write(&config, with_secret).unwrap();
    let mut all = vec![("RTMP_URL", "none"), ("PLAYER", "whip_publish.mjs")];
    all.extend_from_slice(env);
    let url = format!("http://127.0.0.1:3333/live/{stream}");
    in_netns(&config, &url, seconds, &all).await
}

/// FFmpeg 9 publishes over WHIP (H.264 baseline and Opus) through the
/// ladder, and the real OvenPlayer plays the stream over WebRTC in
/// Chromium: the rung's H.264 with the publisher's Opus as it came.
#[tokio::test]
async fn ovenplayer_plays_an_ffmpeg_whip_stream() {
    let _one = SERIAL.lock().await;
    browser_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = netns_config(dir.path(), &[("180p", 320, 180, 300)]);
    let ffmpeg = ffmpeg9();
    let (r, err) = in_netns(
        &config,
        "ws://127.0.0.1:3333/live/fw",
        6,
        &[
            ("RTMP_URL", "http://127.0.0.1:3333/live/fw/whip"),
            ("FFMPEG", ffmpeg.to_str().unwrap()),
        ],
    )
    .await;
    eprintln!("OvenPlayer on an FFmpeg WHIP stream: {r}");
    assert_eq!(r["playing"], true, "{r}\n{err}");
    assert_eq!(r["videoCodec"], "video/H264", "{r}");
    assert_eq!(r["frameWidth"], 320, "the 180p rung, not the source: {r}");
    assert_eq!(r["audioCodec"], "audio/opus", "{r}");
    assert!(r["audioPacketsReceived"].as_u64().unwrap_or(0) > 100, "{r}");
}
