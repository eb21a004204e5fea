//! TURN: streamd hands out short-lived TURN REST API credentials, and a
//! real coturn (Debian's `turnserver`) accepts them. aiortc, gathering no
//! host candidates at all (relay only), plays a stream through coturn over
//! TCP with the `iceServers` from OME signalling's offer; the WHIP and WHEP
//! answers carry the same servers in `Link` headers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::{Child, Command};

const SECRET: &str = "coturn-shared-secret-for-the-tests-0123";

fn tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// coturn on loopback, TCP and UDP on `port`, checking credentials with
/// the shared secret; relaying to loopback peers (streamd) is allowed.
fn coturn(port: u16, log: &Path) -> Child {
    Command::new("turnserver")
        .args([
            "-n",
            "-v",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--use-auth-secret",
            &format!("--static-auth-secret={SECRET}"),
            "--realm=streamd.test",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--simple-log",
            &format!("--log-file={}", log.display()),
            "--min-port=49200",
            "--max-port=49300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("coturn's turnserver (apt coturn; the README's test command installs it)")
}

/// coturn on a free port (its log in `dir`), and streamd with a small
/// ladder naming it over TCP, minting credentials for `ttl` (else the
/// default).
async fn with_coturn(dir: &Path, ttl: Option<Duration>) -> (u16, PathBuf, Child, TestServer) {
    let port = free_port();
    let log = dir.join("turn.log");
    let turn = coturn(port, &log);
    let server = TestServer::start(|c| {
        common::webrtc::small_ladder(c);
        c.turn.urls = vec![format!("turn:127.0.0.1:{port}?transport=tcp")];
        c.turn.secret = SECRET.into();
        if let Some(ttl) = ttl {
            c.turn.ttl = ttl;
        }
    })
    .await;
    (port, log, turn, server)
}

#[tokio::test]
async fn aiortc_plays_through_coturn_with_minted_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (_port, log, _turn, server) = with_coturn(dir.path(), None).await;
    let publisher = server.publish("live", "relay", 60, "640x360");
    server.master_when_ready("live", "relay").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let r = aiortc(
        &server.ws_url("/live/relay"),
        6,
        &[("STREAMD_RELAY_ONLY", "1")],
    )
    .await;
    let turn_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        r["errors"].as_array().map(Vec::len),
        Some(0),
        "{r}\n{turn_log}"
    );
    // Only relay candidates: media could only have come through coturn.
    assert_eq!(
        r["local_candidate_types"],
        serde_json::json!(["relay"]),
        "{r}"
    );
    assert!(r["video_frames"].as_u64().unwrap() >= 60, "{r}\n{turn_log}");
    assert!(r["audio_frames"].as_u64().unwrap() >= 100, "{r}");
    // The offer carried the servers in both of OME's shapes.
    let offer = &r["offer"];
    let user = offer["iceServers"][0]["username"].as_str().unwrap();
    assert_eq!(offer["ice_servers"][0]["user_name"], user);
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now && expiry <= now + 6 * 3600 + 5,
        "valid for turn.ttl: {user}"
    );
    assert!(
        turn_log.contains("ALLOCATE"),
        "coturn saw no allocation:\n{turn_log}"
    );
    drop(publisher);
    server.stop().await;
}

/// OvenPlayer in Chromium, on a client network whose firewall passes only
/// TCP to the signalling port and to coturn's TLS port (tests/browser/
/// turn_tls.sh: two namespaces, iptables), plays through coturn over TLS
/// with the credentials in OME signalling's `iceServers`: the selected
/// pair's local candidate is a TLS relay, the firewall dropped Chromium's
/// direct attempts, and the video decodes.
#[tokio::test]
async fn ovenplayer_plays_through_turn_over_tls_when_only_tls_gets_out() {
    browser_dir();
    let dir = tempfile::tempdir().unwrap();
    let cert = common::tls::make_cert_for(
        dir.path(),
        "turn",
        &["198.18.7.1", "localhost"],
        common::tls::in_a_month(),
    );
    let config = dir.path().join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\ndata_dir = \"{}\"\n[auth]\npublish = \"open\"\n\
             [rtmp]\nlisten = \"198.18.7.1:1935\"\n[http]\nlisten = \"198.18.7.1:3333\"\n\
             [srt]\nenabled = false\n\
             [webrtc]\nudp_listen = \"198.18.7.1:10000\"\ntcp_listen = \"198.18.7.1:3478\"\n\
             candidate_ips = [\"198.18.7.1\"]\n[whip]\nudp_listen = \"198.18.7.1:10100\"\n\
             [turn]\nurls = [\"turns:198.18.7.1:5349?transport=tcp\"]\nsecret = \"{SECRET}\"\n\
             [transcode]\nenabled = true\n[[transcode.ladder]]\nname = \"360p\"\nwidth = 640\n\
             height = 360\nbitrate_kbps = 600\npreset = \"superfast\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let script = tests_dir().join("browser/turn_tls.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_streamd"))
        .arg(&config)
        .arg(&cert.cert)
        .arg(&cert.key)
        .args([SECRET, "10"])
        .env("CHROMIUM_TRUST_SPKI", &cert.spki_sha256)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("bash runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let r = report(&stdout, &stderr);
    let number = |prefix: &str| -> u64 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {prefix}line:\n{stdout}\n{stderr}"))
    };
    eprintln!(
        "TURN over TLS: pair {}, frames {}, first frame {} ms, dropped {}",
        r["candidatePair"],
        r["framesDecoded"],
        r["firstFrameMs"],
        number("DROPPED ")
    );
    assert_eq!(r["playing"], true, "{r}\n{stderr}");
    let local = r["candidatePair"]["local"].as_str().unwrap_or("");
    assert!(
        local.ends_with("relay/tls"),
        "the selected pair is not a TLS relay: {local:?}\n{r}"
    );
    assert!(
        number("DROPPED ") > 0,
        "the firewall dropped nothing: Chromium never tried a direct path\n{stdout}"
    );
    assert!(
        number("TURN_TLS ") > 0,
        "coturn logged no TLS session\n{stderr}"
    );
}

/// `turn.ttl` holds at coturn: the credentials streamd hands out in OME
/// signalling's offer (ttl 60 s) allocate a relay at once, and coturn
/// refuses the same credentials (401) once their minute is over. The
/// client is coturn's own `turnutils_uclient`; coturn's log is the judge.
#[tokio::test]
async fn coturn_refuses_minted_credentials_once_turn_ttl_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(60);
    let (port, log, _turn, server) = with_coturn(dir.path(), Some(ttl)).await;
    let publisher = server.publish("live", "expiring", 120, "320x240");
    server.master_when_ready("live", "expiring").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url("/live/expiring"))
        .await
        .expect("signalling connects");
    common::webrtc::send(&mut ws, serde_json::json!({"command": "request_offer"})).await;
    let offer = common::webrtc::next_json(&mut ws).await.expect("an offer");
    let ice = &offer["iceServers"][0];
    let user = ice["username"].as_str().expect("a username").to_owned();
    let pass = ice["credential"].as_str().expect("a credential").to_owned();
    drop(ws);
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert!(
        (now() + 55..=now() + 61).contains(&expiry),
        "valid for turn.ttl (60 s): {user}"
    );

    let fresh = allocate(port, &user, &pass, &log).await;
    assert!(
        fresh.contains(&format!(
            "user <{user}>: incoming packet ALLOCATE processed, success"
        )),
        "coturn took the fresh credentials:\n{fresh}"
    );
    // Past the expiry (coturn's clock is this machine's).
    while now() <= expiry + 1 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stale = allocate(port, &user, &pass, &log).await;
    assert!(
        stale.contains(&format!(
            "user <{user}>: incoming packet message processed, error 401"
        )),
        "coturn refused the expired credentials:\n{stale}"
    );
    assert!(
        !stale.contains("ALLOCATE processed, success"),
        "an expired credential allocated:\n{stale}"
    );
    drop(publisher);
    server.stop().await;
}

/// One allocation attempt with `user`/`pass` by `turnutils_uclient` over
/// TCP, and what coturn logged meanwhile (until it logged the outcome, or
/// for 10 s).
async fn allocate(port: u16, user: &str, pass: &str, log: &Path) -> String {
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let mut client = Command::new("turnutils_uclient")
        .args(["-t", "-u", user, "-w", pass, "-p", &port.to_string()])
        .args([
            "-n",
            "1",
            "-m",
            "1",
            "-l",
            "100",
            "-e",
            "127.0.0.1",
            "-r",
            "9",
        ])
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("turnutils_uclient (apt coturn; the README's test command installs it)");
    let mut seen = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        seen = text.get(before..).unwrap_or_default().to_owned();
        // A client's first request goes without credentials and is
        // answered 401 (user <>): only this user's outcome counts.
        if seen.contains(&format!(
            "user <{user}>: incoming packet ALLOCATE processed, success"
        )) || seen.contains(&format!(
            "user <{user}>: incoming packet message processed, error 401"
        )) {
            break;
        }
    }
    let _ = client.kill().await;
    seen
}
