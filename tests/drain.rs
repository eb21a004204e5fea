//! The graceful drain, on streamd run as its own process and sent SIGTERM
//! as Kubernetes or systemd would: `/readyz` says 503 at once, new
//! publishers and new viewers are refused with clear answers, the
//! connected ones carry on until the drain deadline, the process exits 0,
//! and the recording is whole and uploaded. A second signal exits at once.
//!
//! The timeline is printed (the note reports it).

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_streamd");

struct Node {
    child: Child,
    rtmp: String,
    http: String,
    log: std::path::PathBuf,
    data: std::path::PathBuf,
}

/// streamd on fixed loopback ports with `drain_timeout`, recording to a
/// local directory, its log in `dir`.
async fn start(dir: &Path, drain_timeout: &str) -> Node {
    let (rtmp, http) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let data = dir.join("data");
    let config = dir.join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"{drain_timeout}\"\n\
             [rtmp]\nlisten = \"{rtmp}\"\n[http]\nlisten = \"{http}\"\n\
             [srt]\nlisten = \"127.0.0.1:0\"\n\
             [webrtc]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\n\
             candidate_ips = [\"127.0.0.1\"]\n\
             [whip]\nudp_listen = \"127.0.0.1:0\"\n\
             [transcode]\nenabled = false\n\
             [auth]\npublish = \"open\"\njwt_secret = \"{TEST_SECRET}\"\n\
             [bus]\nreconnect_grace = \"1s\"\n\
             [database]\ndata_dir = \"{}\"\n\
             [record]\nsegment_target = \"2s\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log = dir.join("streamd.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("streamd runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&http).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "streamd did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Node {
        child,
        rtmp,
        http,
        log,
        data,
    }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running") as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// An LL-HLS viewer already playing: reloads the video playlist with
/// blocking requests for the next segment, as LL-HLS players do, and
/// records the highest media sequence it has seen (0: none yet). Ends
/// with whether it saw EXT-X-ENDLIST before the server went away.
fn llhls_viewer(playlist: String) -> (Arc<AtomicU64>, tokio::task::JoinHandle<bool>) {
    let highest = Arc::new(AtomicU64::new(0));
    let h = highest.clone();
    let task = tokio::spawn(async move {
        let mut next = None;
        loop {
            let url = match next {
                Some(msn) => format!("{playlist}?_HLS_msn={msn}&_HLS_part=0"),
                None => playlist.clone(),
            };
            let Ok(r) = try_get(&url).await else {
                return false;
            };
            if r.status != 200 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let text = r.text();
            if text.contains("#EXT-X-ENDLIST") {
                return true;
            }
            let m = llhls::parse_media(&text);
            let last = m.media_sequence + m.segments.len() as u64;
            h.fetch_max(last, Ordering::SeqCst);
            next = Some(last + 1);
        }
    });
    (highest, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_0_with_the_recording_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path(), "6s").await;
    let base = format!("http://{}", node.http);
    let ready = get(&format!("{base}/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());

    let publisher = Publish {
        url: &format!("rtmp://{}/live/drain", node.rtmp),
        seconds: 60,
        size: "320x240",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let master = poll(
        &format!("{base}/live/drain/llhls.m3u8"),
        Duration::from_secs(20),
        |r| r.status == 200,
    )
    .await;
    let video = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .expect("a video playlist");
    let (highest, viewer) = llhls_viewer(format!("{base}/live/drain/{video}"));
    // A WebRTC viewer too, playing before the signal.
    let mut webrtc =
        common::webrtc::Viewer::connect(&format!("ws://{}/live/drain", node.http), false)
            .await
            .expect("a WebRTC viewer before the drain");
    assert!(webrtc.video_frames(30, Duration::from_secs(15)).await);
    // Playing until the signal: the newest media time it got before.
    let newest = |times: &[u64]| times.iter().copied().max().unwrap_or(0);
    let before = webrtc.video_times(Duration::from_secs(3)).await;
    let live_since = tokio::time::Instant::now() - Duration::from_secs(3);

    // SIGTERM.
    let t0 = tokio::time::Instant::now();
    sigterm(&node.child);
    let at_signal = highest.load(Ordering::SeqCst);
    assert!(at_signal > 0, "the viewer was playing");

    // Not ready at once (the first answer after the signal is handled).
    let not_ready = poll(&format!("{base}/readyz"), Duration::from_secs(2), |r| {
        r.status == 503
    })
    .await;
    let readyz_503_ms = t0.elapsed().as_millis();
    let body: serde_json::Value = serde_json::from_slice(&not_ready.body).unwrap();
    assert_eq!(body["draining"], true, "{body}");
    assert_eq!(body["database"], "ok", "{body}");

    // A new viewer: LL-HLS's master playlist is refused, with Retry-After.
    let r = get(&format!("{base}/live/drain/llhls.m3u8")).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("shutting down"), "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    // A new WebRTC viewer: OME's signalling error, 503.
    match common::webrtc::Viewer::connect(&format!("ws://{}/live/drain", node.http), true).await {
        Err(common::webrtc::Refused(e)) => assert_eq!(e["code"], 503, "{e}"),
        Ok(_) => panic!("a new WebRTC viewer was let in while draining"),
    }
    // A new publisher: NetStream.Publish.Failed.
    let mut client = rtmp::RtmpClient::connect(node.rtmp.parse().unwrap(), "live")
        .await
        .unwrap();
    match client.publish("newcomer").await {
        Err(rtmp::PublishError::Refused(code)) => {
            assert_eq!(code, "NetStream.Publish.Failed")
        }
        other => panic!("a new publisher was not refused: {other:?}"),
    }

    // The connected viewers keep playing during the drain: the WebRTC
    // one gets media made after the signal (2.5 s past the newest it had
    // before, in the ~5 s since), the LL-HLS one new segments.
    let during = webrtc.video_times(Duration::from_secs(4)).await;
    let past_ms = newest(&during).saturating_sub(newest(&before)) / 90;
    assert!(
        past_ms >= 2500,
        "the WebRTC viewer got {past_ms} ms of media past what it had at the signal"
    );
    let during = highest.load(Ordering::SeqCst);
    assert!(
        during >= at_signal + 2,
        "the viewer stalled in the drain: {at_signal} -> {during}"
    );

    // Then, at the deadline, the stream ends and streamd exits 0.
    // The WebRTC viewer, played on, is closed when the deadline ends the
    // stream (and answers the Close, as a browser does).
    let (status, closed) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), node.child.wait()),
        webrtc.run_until(Duration::from_secs(30), |ev| {
            matches!(ev, common::webrtc::ViewerEvent::Closed)
        }),
    );
    let status = status.expect("streamd exits after its drain").unwrap();
    let exit_ms = t0.elapsed().as_millis();
    assert!(closed, "the WebRTC viewer was not closed by the drain");
    // The stream was live from `live_since` until the drain deadline
    // ended it.
    let live_for = (t0 - live_since).as_secs_f64() + 6.0;
    assert!(status.success(), "{status}");
    assert!(
        exit_ms >= 6000,
        "exited {exit_ms} ms after SIGTERM, before the 6 s deadline"
    );
    // The viewer saw the end of the stream.
    let saw_end = tokio::time::timeout(Duration::from_secs(5), viewer)
        .await
        .expect("the viewer finished")
        .unwrap();
    assert!(
        saw_end,
        "the viewer did not get EXT-X-ENDLIST before the exit"
    );
    drop(publisher);

    let log = std::fs::read_to_string(&node.log).unwrap();
    for phase in [
        "draining: /readyz answers 503",
        "drain: deadline reached",
        "drain: streams ended; serving their end",
        "shutting down",
        "drained and stopped",
    ] {
        assert!(log.contains(phase), "{phase:?} not logged:\n{log}");
    }

    // Nothing recorded is lost: the recording is ready, every segment
    // uploaded, the spool empty, and it lasts as long as the stream was
    // live (up to the drain's end).
    let store = streamd::store::Store::open(&format!(
        "sqlite://{}?mode=rwc",
        node.data.join("streamd.db").display()
    ))
    .await
    .unwrap();
    let recs = store.recordings_of("live", "drain").await.unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(
        rec.status,
        streamd::store::recordings::RecordingStatus::Ready,
        "{rec:?}"
    );
    let segments = store.segments(&rec.id).await.unwrap();
    assert!(
        segments
            .iter()
            .all(|s| s.status == streamd::store::recordings::SegmentStatus::Uploaded),
        "{segments:?}"
    );
    let spooled: Vec<_> = walk(&node.data.join("spool"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "m4s" || e == "mp4"))
        .collect();
    assert_eq!(spooled, Vec::<std::path::PathBuf>::new());
    let recorded = rec.duration_ms as f64 / 1000.0;
    assert!(
        recorded >= live_for - 3.0,
        "{recorded} s recorded of about {live_for} s live"
    );
    eprintln!(
        "drain timeline: /readyz 503 {readyz_503_ms} ms after SIGTERM; exit 0 at {exit_ms} ms \
         (deadline 6000 ms); recorded {recorded:.1} s of {live_for:.1} s live; viewer segments \
         {at_signal} -> {during} during the drain"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// With nothing live, the drain ends at once; a second signal during a
/// drain exits at once (status 1) without waiting for the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_drains_at_once_and_a_second_signal_cuts_a_drain_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path(), "60s").await;
    let t0 = tokio::time::Instant::now();
    sigterm(&node.child);
    let status = tokio::time::timeout(Duration::from_secs(20), node.child.wait())
        .await
        .expect("an idle node exits without waiting for its 60 s deadline")
        .unwrap();
    assert!(status.success(), "{status}");
    eprintln!("idle drain: exit 0 after {} ms", t0.elapsed().as_millis());

    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path(), "60s").await;
    let publisher = Publish {
        url: &format!("rtmp://{}/live/busy", node.rtmp),
        seconds: 60,
        size: "320x240",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    poll(
        &format!("http://{}/live/busy/llhls.m3u8", node.http),
        Duration::from_secs(20),
        |r| r.status == 200,
    )
    .await;
    sigterm(&node.child);
    poll(
        &format!("http://{}/readyz", node.http),
        Duration::from_secs(2),
        |r| r.status == 503,
    )
    .await;
    let t1 = tokio::time::Instant::now();
    sigterm(&node.child);
    let status = tokio::time::timeout(Duration::from_secs(5), node.child.wait())
        .await
        .expect("a second signal exits at once")
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("second signal"), "{log}");
    eprintln!("second signal: exit after {} ms", t1.elapsed().as_millis());
    drop(publisher);
}
