//! SRT ingest end to end, against real publishers and players:
//! - FFmpeg 9 (the static build of the `imageio-ffmpeg` PyPI package, which
//!   has libsrt; the README's test command installs it, and without it
//!   these tests fail) publishes MPEG-TS with H.264 and AAC over SRT;
//! - hls.js plays the ladder over LL-HLS, and a WebRTC viewer decodes the
//!   ladder's H.264 and the Opus made from the AAC;
//! - the stream id forms, keys and tokens go through the one admission
//!   path; bad callers (junk stream ids, playback requests, damaged
//!   MPEG-TS sent raw by Debian's `srt-live-transmit`, a wrong passphrase)
//!   get clear errors while a witness stream plays on.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;

use common::webrtc::assert_viewer_decodes;
use common::*;
use streamd::bus::StreamPath;
use tokio::process::{Child, Command};

/// Transcoding and Chromium take both cores: one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Percent-encodes a stream id for ffmpeg's `streamid=` URL option.
fn encode(id: &str) -> String {
    encode_bytes(id.as_bytes())
}

fn encode_bytes(id: &[u8]) -> String {
    id.iter()
        .copied()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn srt_url(server: &TestServer, stream_id: &str, extra: &str) -> String {
    srt_url_bytes(server, stream_id.as_bytes(), extra)
}

fn srt_url_bytes(server: &TestServer, stream_id: &[u8], extra: &str) -> String {
    format!(
        "srt://{}?streamid={}&latency=120000&pkt_size=1316{extra}",
        server.srt.expect("SRT is on"),
        encode_bytes(stream_id)
    )
}

/// `seconds` of the clocked test source (clock.rs) at `size`, H.264 (x264
/// veryfast, B-frames as OBS sends) or HEVC (`hevc`), and AAC, in real
/// time over SRT to `url`.
fn srt_publish(url: &str, seconds: u32, size: &str, hevc: bool) -> Child {
    let video: &[&str] = if hevc {
        X265_FAST
    } else {
        &["-c:v", "libx264", "-preset", "veryfast"]
    };
    ffmpeg9_publish(url, "mpegts", seconds, size, video)
}

#[tokio::test]
async fn ffmpeg_publishes_over_srt_to_the_ladder_hlsjs_and_webrtc() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(common::webrtc::small_ladder).await;
    // OME's form: the whole URL as the stream id.
    let port = server.srt.unwrap().port();
    let id = format!("srt://127.0.0.1:{port}/live/srt");
    let mut publisher = srt_publish(&srt_url(&server, &id, ""), 40, "640x360", false);
    wait_tracks(&server, "live", "srt", &["video", "audio", "360p", "180p"]).await;

    let master = server.master_when_ready("live", "srt").await.text();
    assert!(master.contains("mp4a.40.2"), "AAC in the master: {master}");
    assert!(master.contains("RESOLUTION=640x360"), "{master}");

    // hls.js plays the ladder, low-latency, with the clock drawn by the
    // publisher read off the picture.
    let master_url = server.url("/live/srt/llhls.m3u8");
    let result = hlsjs(&master_url, &["8"], &[]).await;
    eprintln!("hls.js: {result}");
    let advanced = result["advanced"].as_f64().unwrap();
    assert!(
        advanced >= 5.0,
        "playback advanced {advanced} s in 8 s: {result}"
    );
    assert_eq!(result["audioTracks"].as_u64(), Some(1), "{result}");
    let (p50, p95) = clock::check(&result, advanced, 6000);
    eprintln!("SRT to LL-HLS (hls.js) glass-to-glass: p50 {p50} ms, p95 {p95} ms");

    // WebRTC: the ladder's H.264 and the Opus made from the AAC decode.
    assert_viewer_decodes(&server.ws_url("/live/srt")).await;

    let _ = publisher.kill().await;
    server.stop().await;
}

/// HEVC over SRT (libx265 in MPEG-TS, parameter sets in band): LL-HLS
/// serves it as it came (CMAF `hvc1`) beside the ladder's H.264 rungs,
/// ffprobe decodes both, and a WebRTC viewer plays the rungs.
#[tokio::test]
async fn ffmpeg_publishes_hevc_over_srt_beside_the_h264_ladder() {
    let _one = SERIAL.lock().await;
    let server = TestServer::start(common::webrtc::small_ladder).await;
    let mut publisher = srt_publish(&srt_url(&server, "live/hevc", ""), 40, "640x360", true);
    wait_tracks(&server, "live", "hevc", &["video", "audio", "360p", "180p"]).await;
    stream_advances(&server, "live", "hevc", Duration::from_secs(20)).await;
    let master = server.master_when_ready("live", "hevc").await.text();
    let source = variant(&master, "hvc1.").unwrap_or_else(|| panic!("{master}"));
    let rung = variant(&master, "avc1.").unwrap_or_else(|| panic!("{master}"));
    let (name, w, h, frames) = probe_video(&server.url(&format!("/live/hevc/{source}"))).await;
    assert_eq!((name.as_str(), w, h), ("hevc", 640, 360));
    assert!(frames >= 30, "{frames} frames of the passthrough decoded");
    let (name, _, _, frames) = probe_video(&server.url(&format!("/live/hevc/{rung}"))).await;
    assert_eq!(name, "h264");
    assert!(frames >= 30, "{frames} frames of {rung} decoded");
    assert_viewer_decodes(&server.ws_url("/live/hevc")).await;
    let _ = publisher.kill().await;
    server.stop().await;
}

/// The unmodified OvenPlayer (Chromium, in a loopback-only network
/// namespace) plays an SRT publisher's stream over WebRTC through the
/// ladder: Debian's ffmpeg publishes MPEG-TS over SRT (netns.sh).
#[tokio::test]
async fn ovenplayer_plays_an_srt_stream_through_the_ladder() {
    let _one = SERIAL.lock().await;
    let r = ovenplayer_in_netns(
        &[(
            "RTMP_URL",
            "srt://127.0.0.1:9999?streamid=live/cam&latency=120000",
        )],
        "ws://127.0.0.1:3333/live/cam",
        10,
    )
    .await;
    let pair = r["candidatePair"]["remote"].as_str().unwrap_or("");
    assert!(pair.starts_with("127.0.0.1:10000/udp host"), "{r}");
}

/// Runs `ffmpeg` to the end; whether it succeeded and its stderr.
async fn publish_once(server: &TestServer, id: &str, extra: &str, seconds: u32) -> (bool, String) {
    let child = srt_publish(&srt_url(server, id, extra), seconds, "160x120", false);
    let (status, err) = finish(child).await;
    (status.success(), err)
}

/// Keys and tokens in every stream id form take the one admission path;
/// what it refuses is closed, and the reason is logged.
#[tokio::test]
async fn srt_stream_ids_carry_keys_and_tokens_through_admission() {
    let _one = SERIAL.lock().await;
    let (logs, _guard) = Logs::capture_every_thread();
    let server = TestServer::start(|c| c.auth.publish = streamd::config::PublishPolicy::Key).await;
    let store = &server.access.store;
    let (cam, key) = store.create("live", "cam", "", false).await.unwrap();
    let id = cam.id.clone();

    // SRT's access-control form with the key.
    let mut p = srt_publish(
        &srt_url(&server, &format!("#!::r=live/{id},m=publish,key={key}"), ""),
        30,
        "160x120",
        false,
    );
    wait_tracks(&server, "live", &id, &["video", "audio"]).await;
    stream_advances(&server, "live", &id, Duration::from_secs(15)).await;
    let _ = p.kill().await;
    let _ = p.wait().await;
    logs.wait_for(&["SRT publisher closed"], Duration::from_secs(10))
        .await;

    // A wrong key: connected, then refused by admission and closed.
    let (ok, _) = publish_once(&server, &format!("live/{id}?key=wrong-key"), "", 20).await;
    assert!(!ok, "a wrong key published");
    logs.wait_for(&["refused", "wrong stream key"], Duration::from_secs(5))
        .await;

    // MediaMTX's form with a publish token for the stream.
    let token = server.access.auth.mint(
        "",
        Some("publish"),
        Some(&format!("live/{id}")),
        Duration::from_secs(60),
    );
    let mut p = srt_publish(
        &srt_url(&server, &format!("publish:live/{id}:token={token}"), ""),
        30,
        "160x120",
        false,
    );
    stream_advances(&server, "live", &id, Duration::from_secs(15)).await;
    let _ = p.kill().await;
    server.stop().await;
}

/// Bad callers get clear errors and lose the server nothing: a witness
/// stream (RTMP) keeps advancing throughout.
#[tokio::test]
async fn bad_srt_callers_get_clear_errors_and_a_witness_plays_on() {
    let _one = SERIAL.lock().await;
    let (logs, _guard) = Logs::capture_every_thread();
    let server = TestServer::start(|c| c.srt.max_connections_per_ip = 2).await;
    let _witness = server.publish("live", "witness", 90, "320x240");
    server.master_when_ready("live", "witness").await;

    // 512 bytes of junk as the stream id (SRT's most), half of them not
    // UTF-8, sent raw by srt-live-transmit (ffmpeg takes at most 511 and
    // URL-decodes them): rejected at the handshake.
    let junk: Vec<u8> = (0..512u32)
        .map(|i| {
            if i % 2 == 1 {
                0x80 | (i * 37 % 128) as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    let mut url = format!("srt://{}?streamid=", server.srt.unwrap()).into_bytes();
    url.extend_from_slice(&junk);
    let mut sender = Command::new("srt-live-transmit")
        .args(["-q", "-a:no", "file://con"])
        .arg(std::ffi::OsStr::from_bytes(&url))
        // Held open: at the end of its input it would not connect.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit (Debian's srt-tools; scripts/lib.sh installs it)");
    logs.wait_for(
        &["rejected at the handshake", "code=1400", "not UTF-8"],
        Duration::from_secs(5),
    )
    .await;
    let _ = sender.kill().await;
    // And 511 bytes that are text but no stream, from ffmpeg.
    let junk: String = (0..511u32)
        .map(|i| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789-._~"[(i * 7919 % 40) as usize]))
        .collect();
    let (ok, _) = publish_once(&server, &junk, "", 5).await;
    assert!(!ok, "junk published");
    logs.wait_for(
        &["code=1400", "does not name app/stream"],
        Duration::from_secs(5),
    )
    .await;

    // Asking to play: SRT's "bad mode".
    let (ok, _) = publish_once(&server, "#!::r=live/x,m=request", "", 5).await;
    assert!(!ok);
    logs.wait_for(
        &["code=1405", "takes SRT publishers only"],
        Duration::from_secs(5),
    )
    .await;

    // Damaged MPEG-TS, sent raw: lost packets, lying PES lengths, junk
    // between packets and a PMT that changes version every time.
    let ts = damaged_ts().await;
    let mut sender = Command::new("srt-live-transmit")
        .args([
            "-q",
            "-a:no",
            "-chunk:1316",
            "file://con",
            &format!(
                "srt://{}?streamid={}&latency=200",
                server.srt.unwrap(),
                encode("live/damaged")
            ),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("srt-live-transmit (Debian's srt-tools; scripts/lib.sh installs it)");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = sender.stdin.take().unwrap();
        // Paced, about four times real time: a live-mode sender drops
        // what it cannot send in time, and loss is not what this tests.
        for chunk in ts.chunks(1316 * 7) {
            if let Err(e) = stdin.write_all(chunk).await {
                let out = sender.wait_with_output().await.unwrap();
                panic!(
                    "srt-live-transmit stopped reading ({e}): {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    logs.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // Held open: at the end of its input it would stop sending.
        std::mem::forget(stdin);
    }
    wait_tracks(&server, "live", "damaged", &["video", "audio"]).await;
    logs.wait_for(
        &["damaged MPEG-TS from the publisher"],
        Duration::from_secs(10),
    )
    .await;
    // Gone without a word: the server notices (SRT's peer idle timeout,
    // or no data) and frees its place.
    let _ = sender.kill().await;
    let closed = logs
        .wait_for(
            &["SRT publisher closed", "live/damaged"],
            Duration::from_secs(15),
        )
        .await;
    eprintln!("{closed}");

    // The per-address cap: a third caller from here is rejected (1402).
    let a = srt_publish(&srt_url(&server, "live/a", ""), 20, "160x120", false);
    let b = srt_publish(&srt_url(&server, "live/b", ""), 20, "160x120", false);
    wait_tracks(&server, "live", "a", &["video"]).await;
    wait_tracks(&server, "live", "b", &["video"]).await;
    let (ok, _) = publish_once(&server, "live/c", "", 3).await;
    assert!(!ok, "a third caller got past the cap of two");
    logs.wait_for(
        &["code=1402", "too many connections from this address"],
        Duration::from_secs(5),
    )
    .await;
    drop((a, b));

    stream_advances(&server, "live", "witness", Duration::from_secs(10)).await;
    server.stop().await;
}

/// 6 s of the test source in MPEG-TS (Debian's ffmpeg), then damaged: a
/// packet of every 40th lost, the PES length of every PES start set to a
/// lie, 100 bytes of junk every 200 packets, and each PMT a new version.
async fn damaged_ts() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.ts");
    let (ok, _, err) = run(
        "ffmpeg",
        &[
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-f",
            "mpegts",
            path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let clean = std::fs::read(&path).unwrap();
    let mut out = Vec::with_capacity(clean.len() + 8192);
    let mut version = 0u8;
    for (i, p) in clean.chunks(188).enumerate() {
        let mut p = p.to_vec();
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        if i % 40 == 39 && pid == 0x100 {
            continue;
        }
        if pid == 0x1000 && p[1] & 0x40 != 0 {
            version = (version + 1) % 32;
            let s = 5 + usize::from(p[4]);
            let len = (usize::from(p[s + 1] & 0x0f) << 8) | usize::from(p[s + 2]);
            let end = s + 3 + len - 4;
            p[s + 5] = (p[s + 5] & 0xc1) | (version << 1);
            let crc = crc32_mpeg(&p[s..end]);
            p[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        }
        if p[1] & 0x40 != 0 && pid >= 0x100 {
            let start = if p[3] & 0x20 != 0 {
                5 + usize::from(p[4])
            } else {
                4
            };
            if start + 6 <= 188 && p[start..start + 3] == [0, 0, 1] {
                p[start + 4] = 0xff;
                p[start + 5] = 0xff;
            }
        }
        out.extend_from_slice(&p);
        if i % 200 == 199 {
            out.extend((0..100u8).map(|b| b.wrapping_mul(13) | 0x80));
        }
    }
    out
}

/// MPEG-2's CRC-32 (polynomial 0x04C11DB7, no reflection).
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// With a passphrase set, callers without it (or with another) are
/// refused at the handshake, and the right one publishes encrypted.
#[tokio::test]
async fn a_passphrase_is_required_when_set() {
    let _one = SERIAL.lock().await;
    let server =
        TestServer::start(|c| c.srt.passphrase = Some("correct horse battery".into())).await;
    let (ok, err) = publish_once(&server, "live/plain", "", 3).await;
    assert!(!ok, "an unencrypted caller published: {err}");
    let (ok, _) = publish_once(
        &server,
        "live/wrong",
        "&passphrase=wrong%20horse%20battery",
        3,
    )
    .await;
    assert!(!ok, "a wrong passphrase published");
    assert!(
        server
            .registry
            .get(&StreamPath::new("live", "plain").unwrap())
            .is_none()
    );
    let mut p = srt_publish(
        &srt_url(
            &server,
            "live/secret",
            "&passphrase=correct%20horse%20battery",
        ),
        20,
        "160x120",
        false,
    );
    wait_tracks(&server, "live", "secret", &["video", "audio"]).await;
    stream_advances(&server, "live", "secret", Duration::from_secs(15)).await;
    let _ = p.kill().await;
    server.stop().await;
}
