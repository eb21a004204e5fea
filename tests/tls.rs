//! HTTPS: HTTP/2 and HTTP/1.1 by ALPN with a certificate the test makes, a
//! certificate swapped on disk served without a restart, bad input on the
//! TLS port, certificates that must stop the start, playback URLs that say
//! https/wss, and several plain listeners at once.
//!
//! The client is curl (Debian's, with nghttp2): a real HTTP/2 client that
//! reports the protocol it spoke and trusts exactly the CA file it is given.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

fn make_cert(dir: &Path, name: &str, not_after: SystemTime) -> (PathBuf, PathBuf) {
    let c = tls::make_cert(dir, name, not_after);
    (c.cert, c.key)
}

use common::tls::in_a_month;

/// Replaces `to` with `from` the way cert-manager and certbot do: a new file
/// renamed over the old.
fn swap_in(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// What curl got from `url` (`https://localhost:PORT/...`, resolved to
/// loopback) trusting only `ca`: (status or 0 on a TLS failure, HTTP
/// version, body).
async fn curl(port: u16, url: &str, ca: &Path, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("localhost:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(url)
        .output()
        .await
        .expect("curl runs (apt install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split(' ');
    let status = tail.next().unwrap_or("0").parse().unwrap_or(0);
    let version = tail.next().unwrap_or("").to_owned();
    (status, version, body.to_owned())
}

async fn tls_server(dir: &Path, tweak: impl FnOnce(&mut streamd::config::Config)) -> TestServer {
    let (cert, key) = make_cert(dir, "a", in_a_month());
    TestServer::start(|c| {
        c.tls.cert = cert;
        c.tls.key = key;
        c.tls.listen = vec!["127.0.0.1:0".parse().unwrap()];
        c.tls.reload_interval = Duration::from_secs(1);
        c.http.header_timeout = Duration::from_millis(800);
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn https_speaks_http2_and_http1_and_serves_a_renewed_certificate_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |_| {}).await;
    let port = server.https.expect("https listens").port();
    let url = format!("https://localhost:{port}/healthz");
    let ca_a = dir.path().join("a.crt");

    let (status, version, body) = curl(port, &url, &ca_a, &["--http2"]).await;
    assert_eq!((status, version.as_str(), body.trim()), (200, "2", "ok"));
    let (status, version, _) = curl(port, &url, &ca_a, &["--http1.1"]).await;
    assert_eq!((status, version.as_str()), (200, "1.1"));
    // The plain listener is unchanged.
    assert_eq!(get(&server.url("/healthz")).await.status, 200);

    // A renewed certificate (another key) is written over the files.
    let (cert_b, key_b) = make_cert(dir.path(), "b", in_a_month());
    swap_in(&key_b, &dir.path().join("a.key"));
    swap_in(&cert_b, &ca_a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = curl(port, &url, &cert_b, &[]).await;
        if status == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        server
            .metric("streamd_tls_reloads_total{result=\"ok\"}")
            .await,
        1.0
    );

    // A broken pair (a certificate without its key) is refused and the one
    // in use kept.
    let (cert_c, _) = make_cert(dir.path(), "c", in_a_month());
    swap_in(&cert_c, &dir.path().join("a.crt"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while server
        .metric("streamd_tls_reloads_total{result=\"failed\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broken pair was not tried"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (status, _, body) = curl(port, &url, &cert_b, &["--http2"]).await;
    assert_eq!((status, body.trim()), (200, "ok"));
    server.stop().await;
}

/// Reads until the server closes (or `timeout`); what it sent.
async fn until_closed(s: &mut tokio::net::TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(timeout, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|_| got)
}

#[tokio::test]
async fn garbage_plain_http_and_silence_on_the_tls_port_are_turned_away() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |_| {}).await;
    let addr = server.https.unwrap();

    // A TLS-looking record full of garbage: an alert at most, then closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut junk = vec![0x16, 0x03, 0x01, 0x02, 0x00];
    junk.extend((0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    s.write_all(&junk).await.unwrap();
    let got = until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("garbage gets the connection closed");
    assert!(got.len() < 64, "{got:?}");

    // Random bytes that are not even a TLS record.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0x00, 0xff, 0x13, 0x37].repeat(64))
        .await
        .unwrap();
    assert!(
        until_closed(&mut s, Duration::from_secs(5)).await.is_some(),
        "random bytes get the connection closed"
    );

    // Plain HTTP to the TLS port: a readable 400, then closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("closed after the answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("use https://"), "{text}");

    // Silence: closed at the handshake deadline (header_timeout, 800 ms).
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        until_closed(&mut s, Duration::from_secs(5)).await.is_some(),
        "a silent client is closed at the handshake deadline"
    );

    assert!(server.metric("streamd_tls_handshake_failures_total").await >= 4.0);
    // And the port still serves.
    let (status, version, _) = curl(
        addr.port(),
        &format!("https://localhost:{}/healthz", addr.port()),
        &dir.path().join("a.crt"),
        &[],
    )
    .await;
    assert_eq!((status, version.as_str()), (200, "2"));
    server.stop().await;
}

#[tokio::test]
async fn an_expired_or_mismatched_certificate_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (old, old_key) = make_cert(
        dir.path(),
        "old",
        SystemTime::now() - Duration::from_secs(3 * 86_400),
    );
    let (good, _) = make_cert(dir.path(), "good", in_a_month());
    let data = dir.path().join("data");
    for (cert, key, says) in [
        (&old, &old_key, "expired"),
        (&good, &old_key, "does not go with"),
    ] {
        let config = dir.path().join("streamd.toml");
        std::fs::write(
            &config,
            format!(
                "[rtmp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[srt]\nenabled = false\n\
                 [webrtc]\nenabled = false\n[whip]\nenabled = false\n[record]\nenabled = false\n\
                 [database]\ndata_dir = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
                 listen = \"127.0.0.1:0\"\n",
                data.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        // `check-config` says so without starting, and so does a start.
        for args in [
            vec!["check-config".to_owned(), config.display().to_string()],
            vec!["--config".to_owned(), config.display().to_string()],
        ] {
            let out = tokio::time::timeout(
                Duration::from_secs(20),
                Command::new(env!("CARGO_BIN_EXE_streamd"))
                    .args(&args)
                    .env_remove("RUST_BACKTRACE")
                    .output(),
            )
            .await
            .expect("streamd stops at once")
            .unwrap();
            assert!(!out.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(says), "{args:?}: {err}");
            assert!(
                err.contains(&cert.display().to_string()) || says != "expired",
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn playback_urls_say_https_and_wss_when_reached_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |_| {}).await;
    let port = server.https.unwrap().port();
    let ca = dir.path().join("a.crt");
    let bearer = format!(
        "authorization: Bearer {}",
        server
            .access
            .auth
            .mint_api("admin", Duration::from_secs(600))
    );
    let base = format!("https://localhost:{port}/api/streams");
    let (status, _, body) = curl(
        port,
        &base,
        &ca,
        &[
            "-H",
            &bearer,
            "-H",
            "content-type: application/json",
            "--data",
            r#"{"name":"tls"}"#,
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = curl(
        port,
        &format!("{base}/{id}/playback"),
        &ca,
        &["-H", &bearer],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["webrtc"], format!("wss://localhost:{port}/live/{id}"));
    assert_eq!(
        p["llhls"],
        format!("https://localhost:{port}/live/{id}/llhls.m3u8")
    );
    // Over the plain listener: http and ws.
    let r = request(
        "GET",
        &server.url(&format!("/api/streams/{id}/playback")),
        &[("authorization", &bearer["authorization: ".len()..])],
    )
    .await;
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        p["webrtc"].as_str().unwrap().starts_with("ws://127.0.0.1:"),
        "{p}"
    );
    server.stop().await;

    // A public origin (TLS at a proxy or ingress) is what the URLs use.
    let server = TestServer::start(|c| {
        c.http.public_origin = "https://live.example.com".into();
    })
    .await;
    let bearer = format!(
        "Bearer {}",
        server
            .access
            .auth
            .mint_api("admin", Duration::from_secs(600))
    );
    let r = request_with(
        "POST",
        &server.url("/api/streams"),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        r#"{"name":"behind a proxy"}"#.to_owned(),
    )
    .await;
    let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = request(
        "GET",
        &server.url(&format!("/api/streams/{id}/playback")),
        &[("authorization", &bearer)],
    )
    .await;
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["webrtc"], format!("wss://live.example.com/live/{id}"));
    assert_eq!(
        p["llhls"],
        format!("https://live.example.com/live/{id}/llhls.m3u8")
    );
    server.stop().await;
}

/// An HTTP/2 client over TLS (ALPN h2) trusting `ca` alone: its request
/// sender, and the connection's task, which ends when the connection does.
async fn h2_connect(
    port: u16,
    ca: &Path,
) -> (
    hyper::client::conn::http2::SendRequest<String>,
    tokio::task::JoinHandle<()>,
) {
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(h2_tls(port, ca).await),
    )
    .await
    .unwrap();
    (
        send,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    )
}

/// `/healthz`'s status over a new HTTP/2 connection.
async fn h2_healthz(port: u16, ca: &Path) -> hyper::StatusCode {
    let (mut send, _conn) = h2_connect(port, ca).await;
    send.ready().await.unwrap();
    let req = hyper::Request::get(format!("https://localhost:{port}/healthz"))
        .body(String::new())
        .unwrap();
    send.send_request(req).await.unwrap().status()
}

/// A TLS connection to `port` on loopback that agreed on HTTP/2.
async fn h2_tls(port: u16, ca: &Path) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls::h2_tls(&format!("127.0.0.1:{port}"), ca).await
}

/// HTTP/2 "rapid reset" (CVE-2023-44487): a client that opens streams and
/// cancels each at once, as fast as it can, is told to calm down (GOAWAY,
/// ENHANCE_YOUR_CALM: 256 here) and its connection closed long before it
/// has sent 20,000, and the server serves others after.
#[tokio::test]
async fn an_http2_rapid_reset_flood_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |_| {}).await;
    let port = server.https.expect("https listens").port();
    let ca = dir.path().join("a.crt");
    let (mut client, conn) = h2::client::handshake(h2_tls(port, &ca).await)
        .await
        .expect("an HTTP/2 connection");
    let mut conn = tokio::spawn(conn);
    let url = format!("https://localhost:{port}/live/nothing/llhls.m3u8");
    let mut sent = 0u32;
    let cut_off = loop {
        if sent == 20_000 {
            break None;
        }
        // A ready client has a stream slot; an error is the server's
        // GOAWAY.
        let ready = match client.ready().await {
            Ok(ready) => ready,
            Err(e) => break Some(e),
        };
        client = ready;
        let req = hyper::Request::get(&url).body(()).unwrap();
        match client.send_request(req, true) {
            // Dropping the response cancels the stream (RST_STREAM CANCEL).
            Ok((response, _)) => drop(response),
            Err(e) => break Some(e),
        }
        sent += 1;
        if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), &mut conn).await;
    eprintln!("rapid reset: cut off after {sent} cancelled streams by {cut_off:?}");
    let e = cut_off.expect("20,000 cancelled streams and the connection is still open");
    // The GOAWAY, or, if a write of the client's failed on the closed
    // connection before it read the GOAWAY, that failure.
    assert!(
        (e.is_go_away() && e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)) || e.is_io(),
        "{e:?}"
    );
    assert!(ended.is_ok(), "the flooding connection was not closed");
    // Others are served.
    assert_eq!(h2_healthz(port, &ca).await, 200, "others are not served");
    server.stop().await;
}

/// An HTTP/2 connection in use stays open however long it lives; once no
/// request has started on it for `http.idle_timeout`, the server closes
/// it (HTTP/2 answers pings, so nothing else would).
#[tokio::test]
async fn an_idle_http2_connection_is_closed_and_a_busy_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |c| c.http.idle_timeout = Duration::from_secs(3)).await;
    let port = server.https.expect("https listens").port();
    let (mut send, mut conn) = h2_connect(port, &dir.path().join("a.crt")).await;
    // Busy: a request every 300 ms for two idle timeouts.
    for _ in 0..20 {
        send.ready().await.expect("the busy connection is open");
        let req = hyper::Request::get(format!("https://localhost:{port}/healthz"))
            .body(String::new())
            .unwrap();
        let r = send.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut conn)
                .await
                .is_err(),
            "a busy HTTP/2 connection was closed"
        );
    }
    // Idle: closed by the server.
    assert!(
        tokio::time::timeout(Duration::from_secs(15), &mut conn)
            .await
            .is_ok(),
        "an idle HTTP/2 connection was kept open"
    );
    assert_eq!(server.metric("streamd_http2_idle_closed_total").await, 1.0);
    server.stop().await;
}

/// HTTP/2 responses a client takes none of: it reads the first KiB of
/// a 600 KB file (or none: a window of 0), grants that stream no more
/// window, and keeps its connection busy with other requests (so neither the socket nor the
/// idle timeout sees anything wrong). The server closes that connection
/// after `send_timeout`. A client that cancels a response and goes on with
/// small requests is kept; one that reads as slowly as it likes, but
/// reads, gets the whole file.
#[tokio::test]
async fn an_http2_client_that_takes_no_data_is_closed_and_a_slow_reader_kept() {
    const FILE: &str = "/vendor/hls.min.js";
    let size = std::fs::metadata(format!("web/dist{FILE}"))
        .expect("the console is built (scripts/lib.sh build_console)")
        .len() as usize;
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |c| {
        c.http.send_timeout = Duration::from_secs(2);
        c.http.web_dir = "web/dist".into();
    })
    .await;
    let port = server.https.expect("https listens").port();
    let ca = dir.path().join("a.crt");
    let url = format!("https://localhost:{port}{FILE}");
    let get = |url: &str| hyper::Request::get(url).body(()).unwrap();

    // The stalled clients: one reads the first KiB and releases nothing;
    // one grants the stream no window at all (hyper still takes the
    // body's first chunk, which h2 then holds).
    for (window, stalls) in [(1024, 1.0), (0, 2.0)] {
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(window)
            .handshake::<_, bytes::Bytes>(h2_tls(port, &ca).await)
            .await
            .expect("an HTTP/2 connection");
        let mut conn = tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(get(&url), true).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stalled = response.into_body();
        if window > 0 {
            let first = stalled.data().await.expect("DATA").unwrap();
            assert!(!first.is_empty() && first.len() <= window as usize);
        }
        // Busy: a request every 300 ms, each answered, until the server
        // closes the connection.
        let health = format!("https://localhost:{port}/healthz");
        let mut answered = 0;
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let Ok(mut ready) = client.clone().ready().await else {
                    break;
                };
                let Ok((response, _)) = ready.send_request(get(&health), true) else {
                    break;
                };
                match response.await {
                    Ok(r) if r.status() == 200 => answered += 1,
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a connection that took no data for 20 s was kept (window {window})"
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut conn)
                .await
                .is_ok(),
            "the connection did not end"
        );
        assert!(answered >= 3, "the connection was busy: {answered} answers");
        assert_eq!(
            server.metric("streamd_http2_send_stalls_total").await,
            stalls
        );
        drop(stalled);
    }

    // A client that cancels a response it has had enough of (a player
    // seeking) and goes on with small requests owes nothing: its
    // connection is kept well past send_timeout.
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 << 10)
        .handshake::<_, bytes::Bytes>(h2_tls(port, &ca).await)
        .await
        .expect("an HTTP/2 connection");
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(get(&url), true).unwrap();
    let mut body = response.await.unwrap().into_body();
    body.data().await.expect("DATA").unwrap();
    drop(body); // RST_STREAM CANCEL
    let health = format!("https://localhost:{port}/healthz");
    for _ in 0..20 {
        let mut ready = client
            .clone()
            .ready()
            .await
            .expect("the connection is kept");
        let (response, _) = ready.send_request(get(&health), true).unwrap();
        assert_eq!(response.await.expect("answered").status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !conn.is_finished(),
        "a connection that cancelled a response was closed"
    );
    conn.abort();
    assert_eq!(server.metric("streamd_http2_send_stalls_total").await, 2.0);

    // The slow reader: 16 KiB of window every 200 ms, about 80 KB/s.
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(16 << 10)
        .handshake::<_, bytes::Bytes>(h2_tls(port, &ca).await)
        .await
        .expect("an HTTP/2 connection");
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let (response, _) = client.send_request(get(&url), true).unwrap();
    let mut body = response.await.unwrap().into_body();
    let mut got = 0;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the whole file, not a reset");
        got += chunk.len();
        tokio::time::sleep(Duration::from_millis(200 * chunk.len() as u64 / (16 << 10))).await;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert_eq!(got, size);
    assert_eq!(
        server.metric("streamd_http2_send_stalls_total").await,
        2.0,
        "the slow reader's connection was closed"
    );
    server.stop().await;
}

/// HTTP/2 CONTINUATION flood: a HEADERS frame never ended, followed by
/// CONTINUATION frames without end, is not buffered without bound. The
/// server answers GOAWAY and closes the connection after a few frames (h2
/// allows a header block as many CONTINUATIONs as 64 KiB of headers
/// needs at the default frame size, plus a quarter: five), long before
/// the 1 MB the client would send, and serves others after.
#[tokio::test]
async fn an_http2_continuation_flood_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |_| {}).await;
    let port = server.https.expect("https listens").port();
    let ca = dir.path().join("a.crt");
    let mut tls = h2_tls(port, &ca).await;
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    // One literal header (no indexing, new name): "x-a" and 100 bytes.
    let mut field = vec![0x00, 3];
    field.extend_from_slice(b"x-a");
    field.push(100);
    field.extend_from_slice(&[b'v'; 100]);
    let mut start = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    start.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    // HEADERS on stream 1: END_STREAM, not END_HEADERS.
    start.extend(frame(0x1, 0x1, 1, &field));
    tls.write_all(&start).await.unwrap();
    let continuation = frame(0x9, 0, 1, &field);
    let mut sent = start.len();
    while sent < 1 << 20 {
        if tls.write_all(&continuation).await.is_err() {
            break;
        }
        sent += continuation.len();
    }
    // What the server said: a GOAWAY (type 7) among its frames, then the
    // end of the connection.
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the flooding connection was not closed");
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= got.len() {
        let len = (got[at] as usize) << 16 | (got[at + 1] as usize) << 8 | got[at + 2] as usize;
        frames.push(got[at + 3]);
        at += 9 + len;
    }
    eprintln!("continuation flood: {sent} bytes written; the server sent frames {frames:?}");
    assert!(frames.contains(&0x7), "no GOAWAY: {frames:?}");
    assert!(
        sent < 1 << 20,
        "the server took 1 MB of one header block without closing"
    );
    assert_eq!(h2_healthz(port, &ca).await, 200, "others are not served");
    server.stop().await;
}

/// `http.listen` with two addresses serves alike on both (the seed's
/// deployment: signalling on :3333, LL-HLS on :8080).
#[tokio::test]
async fn every_plain_listener_serves() {
    let server = TestServer::start(|c| {
        c.http.listen = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
    })
    .await;
    assert_eq!(server.http_all.len(), 2);
    assert_ne!(server.http_all[0], server.http_all[1]);
    for addr in &server.http_all {
        let r = get(&format!("http://{addr}/healthz")).await;
        assert_eq!(r.status, 200, "{addr}");
    }
    server.stop().await;
}

/// ffmpeg publishes over RTMPS (RTMP inside TLS, on its own port) and the
/// stream is served like any other; plain RTMP still works beside it, and
/// a plain RTMP handshake on the RTMPS port is turned away.
#[tokio::test]
async fn ffmpeg_publishes_over_rtmps() {
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), |c| {
        c.tls.rtmps_listen = vec!["127.0.0.1:0".parse().unwrap()];
    })
    .await;
    let rtmps = server.rtmps.expect("rtmps listens");
    let url = format!("rtmps://localhost:{}/live/secure", rtmps.port());
    let publisher = Publish {
        url: &url,
        seconds: 30,
        size: "320x240",
        gop: 30,
        copy_to: None,
    }
    .spawn();
    let master = server.master_when_ready("live", "secure").await;
    assert_eq!(master.status, 200);
    stream_advances(&server, "live", "secure", Duration::from_secs(10)).await;

    // RTMP's handshake (C0 = 3) on the RTMPS port: closed, nothing served.
    let mut s = tokio::net::TcpStream::connect(rtmps).await.unwrap();
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(0u8, 1536));
    s.write_all(&c0c1).await.unwrap();
    let got = until_closed(&mut s, Duration::from_secs(12))
        .await
        .expect("closed");
    assert!(got.len() < 64, "{got:?}");
    drop(publisher);
    server.stop().await;
}
