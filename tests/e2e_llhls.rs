//! End to end: a real ffmpeg publishes H.264 (with B-frames) and AAC over
//! RTMP; the LL-HLS output is checked against the spec's rules with a real
//! playlist parser, then read back by ffprobe and ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::llhls::{Media, check_rules, parse_media, part_numbers};
use common::*;
use m3u8_parser::m3u8::playlist::Playlist;
use mp4_atom::{Any, Decode};

/// Whether a CMAF part starts with a sync sample (a keyframe).
fn starts_with_sync_sample(part: &[u8]) -> bool {
    let mut buf = part;
    let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
        panic!("part does not start with moof")
    };
    let first = moof.traf[0].trun[0].samples.iter().next().unwrap();
    first.flags.unwrap() & 0x0001_0000 == 0
}

#[tokio::test(flavor = "current_thread")]
async fn publish_and_play_back_llhls() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(|c| {
        c.llhls.segments_kept = 30;
        c.bus.reconnect_grace = Duration::from_secs(1);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("published.flv");
    let url = server.rtmp_url("live", "e2e");
    let publisher = Publish {
        url: &url,
        seconds: 14,
        size: "320x240",
        gop: 30,
        copy_to: Some(&reference),
    }
    .spawn();
    logs.wait_for(&["publishing", "live/e2e"], Duration::from_secs(10))
        .await;

    // The master playlist describes the real stream.
    let master = poll(
        &server.url("/live/e2e/llhls.m3u8"),
        Duration::from_secs(15),
        |r| r.status == 200,
    )
    .await;
    let text = master.text();
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let pl = Playlist::from_reader(text.as_bytes()).unwrap();
    pl.validate().unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert!(text.contains("CODECS=\"avc1.64"), "{text}");
    assert!(text.contains(",mp4a.40.2\""), "{text}");
    assert!(text.contains("RESOLUTION=320x240"), "{text}");
    let fps = number_attr(&text, "FRAME-RATE");
    assert!((fps - 30.0).abs() < 0.5, "{fps}");
    let playlists = media_playlists(&text);
    assert_eq!(playlists.len(), 2, "{text}");
    let (audio_uri, video_uri) = (&playlists[0], &playlists[1]);
    assert!(audio_uri.starts_with("audio_") && video_uri.starts_with("video_"));

    // Let more than 6 target durations of segments accumulate (so a delta
    // update has something to skip), then check both media playlists.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let video_url = server.url(&format!("/live/e2e/{video_uri}"));
    let audio_url = server.url(&format!("/live/e2e/{audio_uri}"));
    let video = parse_media(&get(&video_url).await.text());
    let audio = parse_media(&get(&audio_url).await.text());
    check_rules(&video);
    check_rules(&audio);
    assert!(video.segments.len() >= 3, "{}", video.text);
    // Every audio part is independent; a video part is independent exactly
    // when it starts with a keyframe.
    assert!(audio.parts.iter().all(|p| p.3));
    for (msn, index, _, independent, uri) in &video.parts {
        let part = get(&server.url(&format!("/live/e2e/{uri}"))).await;
        assert_eq!(part.status, 200);
        assert_eq!(
            starts_with_sync_sample(&part.body),
            *independent,
            "part {msn}.{index}"
        );
    }
    // Segments start with independent parts (keyframes) and last ~1 s (GOP).
    for (msn, d) in &video.segments {
        assert!((d - 1.0).abs() < 0.05, "segment {msn} lasts {d}");
    }
    // Rendition reports point at the sibling and are not ahead of it.
    let (report_uri, report_msn, report_part) = &video.reports[0];
    assert_eq!(report_uri, audio_uri);
    let audio_now = parse_media(&get(&audio_url).await.text());
    let (am, ai, ..) = audio_now.parts.last().unwrap();
    assert!((*report_msn, *report_part) <= (*am, *ai));
    // Audio and video segments are numbered alike.
    assert_eq!(video.media_sequence, audio.media_sequence);

    // Delta update: the same playlist with the oldest segments skipped.
    // (Both from the same moment: retried while a part lands between the
    // two requests, a bounded number of times.)
    let mut tries = 0;
    let (full, delta) = loop {
        tries += 1;
        assert!(tries <= 50, "the full and delta playlists never agreed");
        let full = get(&video_url).await.text();
        let delta = get(&format!("{video_url}?_HLS_skip=YES")).await.text();
        let last = |t: &str| {
            t.lines()
                .rfind(|l| l.starts_with("#EXT-X-PART:"))
                .map(str::to_owned)
        };
        if last(&full) == last(&delta) {
            break (full, delta);
        }
    };
    let skipped: usize = delta
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .unwrap_or_else(|| panic!("no skip in {delta}"))
        .parse()
        .unwrap();
    let full_m = parse_media(&full);
    let segment_uris = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && l.ends_with(".m4s"))
            .map(str::to_owned)
            .collect()
    };
    assert!(skipped >= 1 && skipped < full_m.segments.len());
    assert_eq!(
        segment_uris(&delta),
        segment_uris(&full)[skipped..].to_vec()
    );
    // Segments kept within 6 target durations (6 s) of the end.
    let kept: f64 = full_m.segments[skipped..].iter().map(|s| s.1).sum();
    assert!(kept <= 6.0 + 1.0 + 1e-6, "{kept}");

    // Blocking reload: ask for the hinted (not yet existing) part.
    let now = parse_media(&get(&video_url).await.text());
    let hint_uri = now.hint.clone().unwrap();
    let (msn, part) = part_numbers(&hint_uri);
    assert!(!now.parts.iter().any(|p| p.4 == hint_uri));
    let blocked_url = format!("{video_url}?_HLS_msn={msn}&_HLS_part={part}");
    let hinted_url = server.url(&format!("/live/e2e/{hint_uri}"));
    let (blocked, hinted) = tokio::join!(get(&blocked_url), get(&hinted_url));
    assert_eq!(blocked.status, 200);
    let answered = parse_media(&blocked.text());
    assert!(
        answered.parts.iter().any(|p| p.4 == hint_uri),
        "the held response has the part"
    );
    assert_eq!(blocked.header("cache-control"), Some("public, max-age=6"));
    assert_eq!(hinted.status, 200, "the hinted part was held, not 404'd");
    // Segments start at the source's keyframes (1 s GOP), and only there:
    // the part starts with one exactly when it is a segment's first.
    assert_eq!(
        starts_with_sync_sample(&hinted.body),
        part == 0,
        "part {msn}.{part}"
    );

    // The publisher finishes; after the grace period the playlists end.
    let (status, stderr) = finish(publisher).await;
    assert!(status.success(), "ffmpeg: {stderr}");
    poll(&video_url, Duration::from_secs(10), |r| {
        r.text().contains("#EXT-X-ENDLIST")
    })
    .await;
    logs.wait_for(&["stream ended"], Duration::from_secs(5))
        .await;

    // ffprobe reads everything back: both tracks, every frame.
    let master_url = server.url("/live/e2e/llhls.m3u8");
    let count = |src: String| async move {
        let (ok, out, err) = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-count_packets",
                "-show_entries",
                "stream=codec_name,nb_read_packets",
                "-of",
                "json",
                &src,
            ],
        )
        .await;
        assert!(ok, "ffprobe {src}: {err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut v = 0;
        let mut a = 0;
        // Top-level streams only (a master playlist also lists them per program).
        for s in json["streams"].as_array().unwrap() {
            let n: u32 = s["nb_read_packets"].as_str().unwrap().parse().unwrap();
            match s["codec_name"].as_str() {
                Some("h264") => v += n,
                Some("aac") => a += n,
                _ => {}
            }
        }
        (v, a)
    };
    let (pub_v, pub_a) = count(reference.display().to_string()).await;
    let (got_v, got_a) = count(master_url.clone()).await;
    assert_eq!(pub_v, 14 * 30);
    assert_eq!(got_v, pub_v, "every published video frame is served");
    // Audio before the first video keyframe is dropped to start both
    // tracks together: at most a couple of AAC frames.
    assert!(
        got_a <= pub_a && pub_a - got_a <= 3,
        "audio {got_a} of {pub_a}"
    );

    // Timestamps: video every 1/30 s, audio and video starting together.
    let (ok, out, err) = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,pts_time,dts_time",
            "-of",
            "csv=p=0",
            &master_url,
        ],
    )
    .await;
    assert!(ok, "{err}");
    let mut video_pts = vec![];
    let mut first_audio = None;
    let mut last_dts = f64::MIN;
    for l in out.lines() {
        let f: Vec<&str> = l.split(',').collect();
        let (Ok(pts), Ok(dts)) = (f[1].parse::<f64>(), f[2].parse::<f64>()) else {
            continue;
        };
        if f[0] == "1" {
            video_pts.push(pts);
            assert!(dts >= last_dts, "video decode times only go forward");
            last_dts = dts;
        } else if first_audio.is_none() {
            first_audio = Some(pts);
        }
    }
    video_pts.sort_by(f64::total_cmp);
    for w in video_pts.windows(2) {
        let step = w[1] - w[0];
        assert!((step - 1.0 / 30.0).abs() < 0.0015, "video step {step}");
    }
    let av = (first_audio.unwrap() - video_pts[0]).abs();
    assert!(av < 0.1, "audio starts {av} s away from video");

    // ffmpeg decodes all of it without a single error.
    let (ok, _, err) = run(
        "ffmpeg",
        &["-v", "error", "-i", &master_url, "-f", "null", "-"],
    )
    .await;
    assert!(ok && err.trim().is_empty(), "decode errors: {err}");
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn reconnecting_publisher_continues_the_playlist() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(3);
    })
    .await;
    let mut first = server.publish("live", "blip", 30, "160x120");
    let video_url = server.video_playlist("live", "blip").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = parse_media(&get(&video_url).await.text());

    // The publisher drops (killed: no clean unpublish), then comes back.
    first.kill().await.unwrap();
    logs.wait_for(
        &["publisher disconnected", "live/blip"],
        Duration::from_secs(5),
    )
    .await;
    // During the gap players get the playlist, not a 404 storm.
    let gap_start = Instant::now();
    while gap_start.elapsed() < Duration::from_millis(1500) {
        let r = get(&video_url).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(!r.text().contains("#EXT-X-ENDLIST"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second = server.publish("live", "blip", 30, "160x120");
    logs.wait_for(
        &["publisher resumed the broadcast"],
        Duration::from_secs(10),
    )
    .await;
    let after = poll(&video_url, Duration::from_secs(10), |r| {
        r.text().contains("#EXT-X-DISCONTINUITY\n")
    })
    .await;
    let after = parse_media(&after.text());
    // Same playlist, numbering continues across the discontinuity.
    assert!(after.segments.last().unwrap().0 > before.segments.last().unwrap().0);
    let text = &after.text;
    let disc_at = text.find("#EXT-X-DISCONTINUITY\n").unwrap();
    assert!(
        text[disc_at..]
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("#EXT-X-PROGRAM-DATE-TIME")
    );
    check_rules(&after);
    drop(second);
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn several_streams_live_and_a_second_publisher_is_refused() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(|_| {}).await;
    let pa = server.publish("live", "a", 30, "160x120");
    let pb = server.publish("other", "b", 30, "160x120");
    server.master_when_ready("live", "a").await;
    server.master_when_ready("other", "b").await;

    // A second publisher on /live/a is refused with an RTMP error...
    let intruder = server.publish("live", "a", 5, "160x120");
    let (status, stderr) = finish(intruder).await;
    assert!(!status.success(), "the second publisher must fail");
    assert!(
        stderr.contains("already has a publisher"),
        "ffmpeg said: {stderr}"
    );
    logs.wait_for(
        &["refusing a second publisher", "live/a"],
        Duration::from_secs(5),
    )
    .await;

    // ...and the first one is untouched: its playlist keeps growing.
    let video_url = server.video_playlist("live", "a").await;
    let newest = |m: &Media| m.parts.last().map(|p| p.4.clone());
    let before = newest(&parse_media(&get(&video_url).await.text()));
    let after = poll(&video_url, Duration::from_secs(5), |r| {
        newest(&parse_media(&r.text())) != before
    })
    .await;
    assert!(!after.text().contains("#EXT-X-DISCONTINUITY\n"));
    drop((pa, pb));
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn cors_preflight_and_cache_headers() {
    let server = TestServer::start(|c| {
        c.llhls.cors_origins = vec!["https://player.example".into()];
    })
    .await;
    let p = server.publish("live", "cors", 30, "160x120");
    let master_url = server.url("/live/cors/llhls.m3u8");
    server.master_when_ready("live", "cors").await;

    let pre = request(
        "OPTIONS",
        &master_url,
        &[
            ("origin", "https://player.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert!(pre.status.is_success(), "{}", pre.status);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://player.example")
    );
    assert!(
        pre.header("access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );
    let other = request("GET", &master_url, &[("origin", "https://evil.example")]).await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    let master = get(&master_url).await;
    assert_eq!(master.header("cache-control"), Some("public, max-age=0"));
    let video_uri = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .unwrap();
    let media = get(&server.url(&format!("/live/cors/{video_uri}"))).await;
    let m = parse_media(&media.text());
    let part = get(&server.url(&format!("/live/cors/{}", m.parts[0].4))).await;
    assert_eq!(part.header("content-type"), Some("video/mp4"));
    assert_eq!(part.header("cache-control"), Some("public, max-age=6"));
    drop(p);
    server.stop().await;
}

/// `/metrics` has per-stream series while the stream is live (media per
/// track, viewers by protocol) and none once it has ended.
#[tokio::test(flavor = "current_thread")]
async fn per_stream_metrics_come_and_go_with_the_stream() {
    let server = TestServer::start(|c| {
        c.bus.reconnect_grace = Duration::from_secs(1);
        c.llhls.linger = Duration::from_secs(1);
    })
    .await;
    let series = |text: &str, prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let publisher = server.publish("live", "metered", 20, "320x240");
    server.master_when_ready("live", "metered").await;
    stream_advances(&server, "live", "metered", Duration::from_secs(10)).await;
    // A player: master, then its media playlist (an LL-HLS viewer).
    let master = get(&server.url("/live/metered/llhls.m3u8")).await.text();
    for p in media_playlists(&master) {
        assert_eq!(
            get(&server.url(&format!("/live/metered/{p}"))).await.status,
            200
        );
    }
    let first = get(&server.url("/metrics")).await.text();
    let frames = |t: &str| {
        series(
            t,
            "streamd_stream_frames_total{stream=\"live/metered\",track=\"video\",kind=\"video\"}",
        )
    };
    let f1 = frames(&first).unwrap_or_else(|| panic!("no frames series:\n{first}"));
    assert!(f1 > 0.0);
    let bytes = series(
        &first,
        "streamd_stream_received_bytes_total{stream=\"live/metered\",track=\"video\"",
    )
    .unwrap();
    assert!(bytes > 1000.0, "{bytes}");
    assert_eq!(
        series(
            &first,
            "streamd_stream_viewers{stream=\"live/metered\",protocol=\"llhls\"}"
        ),
        Some(1.0),
        "{first}"
    );
    assert!(first.contains("# TYPE streamd_stream_frames_total counter"));
    assert!(series(&first, "streamd_streams_live ").unwrap() >= 1.0);
    // A second later the counter has grown by about a second of frames.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let f2 = frames(&get(&server.url("/metrics")).await.text()).unwrap();
    assert!(f2 >= f1 + 15.0, "{f1} -> {f2}");

    drop(publisher);
    // The ended stream's series go.
    poll(&server.url("/metrics"), Duration::from_secs(15), |r| {
        !r.text().contains("stream=\"live/metered\"")
    })
    .await;
    server.stop().await;
}
