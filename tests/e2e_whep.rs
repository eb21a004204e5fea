//! WHEP playback end to end: ffmpeg publishes over RTMP, the ladder
//! transcodes, and a str0m client plays over WHEP (it offers, the server
//! answers), decoding the H.264 and the Opus; DELETE ends the session.
//! Private streams need their playback token; bad offers get clear errors.

mod common;

use std::time::Duration;

use common::webrtc::{Viewer, ViewerEvent};
use common::*;
use ffmpeg_next as ff;

/// Transcoding takes most of both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until the stream's renditions and Opus track exist.
async fn wait_ready(server: &TestServer, stream: &str) {
    let path = streamd::bus::StreamPath::new("live", stream).unwrap();
    for _ in 0..300 {
        if let Some(b) = server.registry.get(&path)
            && b.catalog().is_some_and(|c| c.complete)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got its renditions");
}

#[tokio::test]
async fn a_whep_viewer_plays_and_delete_ends_it() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let publisher = server.publish("live", "whep", 60, "640x360");
    wait_ready(&server, "whep").await;

    let url = server.url("/live/whep/whep");
    let (mut viewer, location) = Viewer::whep(&url, None).await.expect("201 Created");
    assert!(location.starts_with("/live/whep/whep/"), "{location}");
    ff::init().unwrap();
    let codec = ff::decoder::find(ff::codec::Id::H264).unwrap();
    let mut h264 = ff::codec::Context::new_with_codec(codec)
        .decoder()
        .video()
        .unwrap();
    let mut picture = ff::frame::Video::empty();
    let (mut pictures, mut audio, mut size) = (0, 0, (0, 0));
    let ok = viewer
        .run_until(Duration::from_secs(15), |ev| {
            match ev {
                ViewerEvent::Video { data, .. } => {
                    h264.send_packet(&ff::Packet::copy(data))
                        .expect("every access unit decodes");
                    while h264.receive_frame(&mut picture).is_ok() {
                        pictures += 1;
                        size = (picture.width(), picture.height());
                    }
                }
                ViewerEvent::Audio { data, .. } => {
                    assert!(!data.is_empty());
                    audio += 1;
                }
                _ => {}
            }
            pictures >= 30 && audio >= 50
        })
        .await;
    assert!(
        ok,
        "the WHEP viewer decoded {pictures} pictures, {audio} audio frames"
    );
    // start_bitrate_kbps 1000 in the small ladder: the 600 kbps rung.
    assert_eq!(size, (640, 360));
    assert_eq!(server.metric("streamd_webrtc_viewers").await, 1.0);

    // PATCH: trickle ICE and an ICE restart, and the ways to get it wrong.
    let resource = location.rsplit('/').next().unwrap();
    let resource_url = server.url(&location);
    let etag = format!("\"{}\"", viewer.etag().trim_matches('"'));
    use common::webrtc::patch;
    const FRAG: &str = common::webrtc::FRAGMENT;
    let candidate = "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\n".to_owned();
    for (url, content_type, if_match, body, status) in [
        (
            resource_url.clone(),
            "application/sdp",
            etag.clone(),
            candidate.clone(),
            415,
        ),
        (
            resource_url.clone(),
            FRAG,
            "\"stale\"".into(),
            candidate.clone(),
            412,
        ),
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            format!(
                "a=ice-ufrag:abcd\r\na=ice-pwd:{}\r\n{candidate}",
                "p".repeat(22)
            ),
            422,
        ),
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            "not sdp at all".into(),
            400,
        ),
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            "a=candidate:1 1 udp x 127.0.0.1 9 typ host\r\n".into(),
            400,
        ),
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            candidate.repeat(40),
            400,
        ),
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            "a=x\r\n".repeat(10_000),
            413,
        ),
        (
            resource_url.clone(),
            FRAG,
            "*".into(),
            candidate.clone(),
            400,
        ),
        (
            server.url(&format!("/live/other/whep/{resource}")),
            FRAG,
            etag.clone(),
            candidate.clone(),
            404,
        ),
        (
            server.url("/live/whep/whep/nosuchresource"),
            FRAG,
            etag.clone(),
            candidate.clone(),
            404,
        ),
        // A trickled candidate with the current entity-tag is taken.
        (
            resource_url.clone(),
            FRAG,
            etag.clone(),
            candidate.clone(),
            204,
        ),
    ] {
        let r = patch(url, content_type, if_match.clone(), body).await;
        assert_eq!(r.status, status, "{content_type} {if_match}: {}", r.text());
    }
    viewer
        .whep_restart_ice(&resource_url)
        .await
        .expect("200 OK to an ICE restart");
    assert_ne!(viewer.etag().trim_matches('"'), etag.trim_matches('"'));
    // The old entity-tag is stale now.
    let r = patch(resource_url.clone(), FRAG, etag.clone(), candidate.clone()).await;
    assert_eq!(r.status, 412, "{}", r.text());
    // str0m dropped every candidate pair: ICE comes back only through
    // checks with the new credentials, and media follows.
    let mut states = Vec::new();
    let mut after = 0;
    let ok = viewer
        .run_until(Duration::from_secs(15), |ev| {
            match ev {
                ViewerEvent::Ice(s) => states.push(s.clone()),
                ViewerEvent::Video { .. }
                    if states.iter().any(|s| s == "Connected" || s == "Completed") =>
                {
                    after += 1
                }
                _ => {}
            }
            after >= 30
        })
        .await;
    assert!(
        ok,
        "after the ICE restart: states {states:?}, {after} frames"
    );
    assert_eq!(
        states.first().map(String::as_str),
        Some("Checking"),
        "{states:?}"
    );
    assert_eq!(server.metric("streamd_whep_ice_restarts_total").await, 1.0);

    // DELETE on another stream's path finds nothing; on its own it ends
    // the session, and the engine lets the viewer go.
    let r = request(
        "DELETE",
        &server.url(&format!("/live/other/whep/{resource}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 404);
    let r = request("DELETE", &server.url(&location), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request("DELETE", &server.url(&location), &[]).await;
    assert_eq!(r.status, 404);
    assert!(
        common::webrtc::viewers_gone(&server).await,
        "the deleted WHEP viewer is still in the engine"
    );
    drop(publisher);
    server.stop().await;
}

/// A str0m offer receiving only VP8 video: nothing the SFU sends.
async fn vp8_only_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder()
        .clear_codecs()
        .enable_vp8(true)
        .build(std::time::Instant::now());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rtc.add_local_candidate(str0m::Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

#[tokio::test]
async fn whep_refuses_bad_offers_and_needs_a_private_streams_token() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(|_| {}).await;
    let (private, key) = server
        .access
        .store
        .create("live", "private", "", true)
        .await
        .expect("a private stream");
    let publisher = server.publish("live", &format!("{}?key={key}", private.id), 60, "320x240");
    let path = format!("/live/{}/whep", private.id);
    let mut ready = false;
    for _ in 0..200 {
        let p = streamd::bus::StreamPath::new("live", &private.id).unwrap();
        if server
            .registry
            .get(&p)
            .and_then(|b| b.catalog())
            .is_some_and(|c| c.complete)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the private stream is live");

    // No token, a bogus one, a publish token: refused.
    let url = server.url(&path);
    let r = Viewer::whep(&url, None).await.err().expect("refused");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = Viewer::whep(&url, Some("e30.e30.c2ln"))
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status, 401, "{}", r.text());
    let publish = server.access.auth.mint(
        "",
        Some("publish"),
        Some(&format!("live/{}", private.id)),
        Duration::from_secs(60),
    );
    let r = Viewer::whep(&url, Some(&publish))
        .await
        .err()
        .expect("refused");
    assert_eq!(r.status, 401, "{}", r.text());

    // Its playback token plays, as the bearer or in the URL.
    let token = server.access.auth.mint(
        "",
        Some("playback"),
        Some(&format!("live/{}", private.id)),
        Duration::from_secs(60),
    );
    let (mut v, _) = Viewer::whep(&url, Some(&token))
        .await
        .expect("played with the token");
    assert!(v.plays().await, "video arrives");
    let (mut v2, _) = Viewer::whep(&format!("{url}?token={token}"), None)
        .await
        .expect("played with ?token=");
    assert!(v2.plays().await, "video arrives");

    // Bad requests, each with its own error.
    let bearer = format!("Bearer {token}");
    let post_url = server.url(&path);
    let sdp = |body: String| {
        let (url, bearer) = (post_url.clone(), bearer.clone());
        async move {
            request_with(
                "POST",
                &url,
                &[
                    ("content-type", "application/sdp"),
                    ("authorization", &bearer),
                ],
                body,
            )
            .await
        }
    };
    let r = sdp("garbage".into()).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = sdp(vp8_only_offer().await).await;
    assert_eq!(r.status, 406, "{}", r.text());
    let r = sdp("v=0\r\n".repeat(20_000)).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let r = request_with(
        "POST",
        &server.url(&path),
        &[("content-type", "text/plain")],
        "v=0",
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    let r = Viewer::whep(&server.url("/live/nothing-here/whep"), None)
        .await
        .err()
        .expect("no such stream");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request_with(
        "PATCH",
        &server.url(&format!("{path}/abc")),
        &[("content-type", "application/trickle-ice-sdpfrag")],
        "a=end-of-candidates\r\n",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // The viewers that were let in still play.
    assert!(v.plays().await && v2.plays().await);
    drop(publisher);
    server.stop().await;
}

/// Chromium plays over WHEP from a page of another origin (its own offer,
/// fetch, the answer), in a loopback-only namespace with an RTMP publisher
/// and the ladder (tests/browser/netns.sh): decoded frames keep rising,
/// Opus arrives, and DELETE ends the session.
#[tokio::test]
async fn chromium_plays_over_whep() {
    let _one = SERIAL.lock().await;
    browser_dir();
    let dir = tempfile::tempdir().unwrap();
    let config = netns_config(dir.path(), &[("360p", 640, 360, 600)]);
    let (r, err) = in_netns(
        &config,
        "ws://127.0.0.1:3333/live/cam",
        8,
        &[("PLAYER", "whep_play.mjs")],
    )
    .await;
    eprintln!("Chromium WHEP: {r}");
    assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{r}\n{err}");
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["playing"], true, "{r}\n{err}");
    let frames: Vec<u64> = r["framesDecoded"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect();
    assert!(*frames.last().unwrap() >= 8 * 15, "{frames:?}");
    assert_eq!(r["videoCodec"], "video/H264", "{r}");
    assert_eq!(r["audioCodec"], "audio/opus", "{r}");
    assert!(r["audioPacketsReceived"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["width"], 640, "{r}");
    assert_eq!(r["deleteStatus"], 200, "{r}");
}
