//! The `streamd` binary itself: configuration, logged addresses, signals.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_streamd");

/// The address logged after `what listening addr=`.
fn logged_addr(line: &str, what: &str) -> Option<String> {
    let rest = line.split(&format!("{what} listening")).nth(1)?;
    Some(
        rest.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

#[tokio::test]
async fn runs_on_port_zero_logs_addresses_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [srt]\nlisten = \"127.0.0.1:0\"\n\
             [webrtc]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\n\
             [whip]\nudp_listen = \"127.0.0.1:0\"\n\
             [database]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut rtmp, mut http) = (None, None);
    while rtmp.is_none() || http.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("addresses are logged at start")
            .unwrap()
            .expect("streamd exited early");
        let plain: String = strip_ansi(&line);
        rtmp = rtmp.or(logged_addr(&plain, "rtmp"));
        http = http.or(logged_addr(&plain, "http"));
    }
    let (rtmp, http) = (rtmp.unwrap(), http.unwrap());
    assert!(
        rtmp.starts_with("127.0.0.1:") && !rtmp.ends_with(":0"),
        "{rtmp}"
    );
    let health = common::get(&format!("http://{http}/healthz")).await;
    assert_eq!(health.status, 200);
    let metrics = common::get(&format!("http://{http}/metrics")).await;
    assert_eq!(metrics.status, 200);
    tokio::net::TcpStream::connect(&rtmp)
        .await
        .expect("rtmp port accepts");

    // SIGTERM: a graceful exit with status 0.
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn unknown_config_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[llhls]\npart_targett = \"200ms\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("part_targett"), "{stderr}");
}

/// A recording location that cannot be one stops streamd at start, with
/// the key and the reason.
#[tokio::test]
async fn a_bad_recording_location_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [webrtc]\nenabled = false\n[whip]\nenabled = false\n[srt]\nenabled = false\n\
             [database]\ndata_dir = \"{}\"\n\
             [record]\nlocation = \"gs://bucket/../../etc\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new(BIN).arg("--config").arg(&config).output(),
    )
    .await
    .expect("streamd stops at once")
    .unwrap();
    assert!(!out.status.success());
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(text.contains("record.location"), "{text}");
    assert!(text.contains("gs://bucket/../../etc"), "{text}");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `streamd token` mints an API token with the secret it generates (once)
/// in the data directory, and the same secret signs the next one.
#[tokio::test]
async fn token_subcommand_signs_with_a_generated_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamd.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mint = || async {
        let out = Command::new(BIN)
            .args(["token", "--ttl", "1h", "--config"])
            .arg(&config)
            .env_remove("JWT_SECRET")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let first = mint().await;
    assert_eq!(first.split('.').count(), 3, "{first}");
    let secret = std::fs::read_to_string(dir.path().join("data/jwt_secret")).unwrap();
    assert!(secret.len() >= 32);
    let second = mint().await;
    let auth = streamd::auth::Auth::new(&secret, Default::default());
    for t in [&first, &second] {
        assert_eq!(auth.check_api(Some(t)).unwrap().sub, "admin");
    }
    // The webhook key a receiver is given: derived, not the JWT secret, and
    // useless for minting API tokens.
    let out = Command::new(BIN)
        .args(["webhook-secret", "--config"])
        .arg(&config)
        .env_remove("JWT_SECRET")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let hook = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(hook, streamd::auth::derive_key(&secret, "webhooks"));
    assert_ne!(hook, secret);
    let by_hook = streamd::auth::Auth::new(&hook, Default::default())
        .mint_api("receiver", Duration::from_secs(60));
    assert!(auth.check_api(Some(&by_hook)).is_err());
}

/// `streamd config` prints the effective configuration (file, then
/// STREAMD_SECTION__KEY variables), secrets redacted; `check-config`
/// validates with the environment applied and names a bad variable.
#[tokio::test]
async fn config_and_check_config_see_the_environment() {
    let out = Command::new(BIN)
        .arg("config")
        .env("STREAMD_HTTP__LISTEN", "127.0.0.1:3333,127.0.0.1:8080")
        .env(
            "STREAMD_AUTH__JWT_SECRET",
            "env-secret-env-secret-env-secret-0",
        )
        .env("STREAMD_RECORD__APPS__RAW__ENABLED", "false")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(r#"listen = ["127.0.0.1:3333", "127.0.0.1:8080"]"#),
        "{text}"
    );
    assert!(!text.contains("env-secret"), "{text}");
    assert!(text.contains(r#"jwt_secret = "<redacted>""#), "{text}");
    let printed: toml::Table = text.parse().expect("the printed config is TOML");
    assert_eq!(
        printed["record"]["apps"]["raw"]["enabled"].as_bool(),
        Some(false)
    );

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/streamd.toml");
    let out = Command::new(BIN)
        .args(["check-config", shipped])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));

    let out = Command::new(BIN)
        .args(["check-config", shipped])
        .env("STREAMD_WEBRTC__MAX_VIEWERS", "lots")
        .env_remove("RUST_BACKTRACE")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("STREAMD_WEBRTC__MAX_VIEWERS"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace: {err}");
}
