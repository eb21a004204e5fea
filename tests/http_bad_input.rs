//! Hostile LL-HLS requests: each gets a 4xx at once (nothing is held, no
//! file is touched) and the stream keeps being served.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a request line exactly as written (no client-side normalisation
/// of `..`) and returns the status code.
async fn raw_status(addr: std::net::SocketAddr, target: &str) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "current_thread")]
async fn hostile_hls_requests_get_4xx_and_change_nothing() {
    let server = TestServer::start(|_| {}).await;
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "w").await;
    let master = poll(
        &server.url("/live/w/llhls.m3u8"),
        Duration::from_secs(10),
        |r| r.status == 200,
    )
    .await;
    let video = media_playlists(&master.text())
        .into_iter()
        .find(|u| u.starts_with("video"))
        .unwrap();
    let stem = video.trim_end_matches(".m3u8").to_owned();

    let cases: Vec<(String, u16)> = vec![
        ("/live/../../etc/passwd".into(), 404),
        ("/../../../etc/passwd".into(), 404),
        ("/live/w/../../../etc/passwd".into(), 404),
        ("/live/%2e%2e/llhls.m3u8".into(), 404),
        ("/%2e%2e/%2e%2e/etc%2fpasswd".into(), 404),
        ("/live/w/..%2f..%2fetc%2fpasswd".into(), 404),
        ("/live/w/%00.m3u8".into(), 404),
        ("/live/w/llhls.m3u8/..".into(), 404),
        (format!("/live/w/{video}?_HLS_msn=99999999999"), 400),
        (
            format!("/live/w/{video}?_HLS_msn=18446744073709551615"),
            400,
        ),
        (
            format!("/live/w/{video}?_HLS_msn=18446744073709551616"),
            400,
        ),
        (format!("/live/w/{video}?_HLS_msn=-1"), 400),
        (format!("/live/w/{video}?_HLS_msn=1&_HLS_part=-2"), 400),
        (
            format!("/live/w/{video}?_HLS_msn=1&_HLS_part=4294967296"),
            400,
        ),
        (format!("/live/w/{video}?_HLS_part=1"), 400),
        (format!("/live/w/{video}?_HLS_skip=maybe"), 400),
        (format!("/live/w/{stem}_-1.m4s"), 404),
        (format!("/live/w/{stem}_1_-1.m4s"), 404),
        (format!("/live/w/{stem}_18446744073709551615_0.m4s"), 404),
        (format!("/live/w/{stem}_99999999.m4s"), 404),
        (format!("/live/w/{stem}_0_4294967295.m4s"), 404),
        (format!("/live/w/{stem}_init99.mp4"), 404),
        ("/live/w/video_00000000.m3u8".into(), 404),
        ("/live/nosuch/llhls.m3u8".into(), 404),
        (format!("/live/w/{}", "a".repeat(8000)), 404),
    ];
    let held = || server.metric("streamd_llhls_held_requests_total");
    // (Each is sent alone, so a publisher's playlist traffic is not counted.)
    for (target, want) in &cases {
        let before = held().await;
        let got = raw_status(server.http, target).await;
        assert_eq!(got, *want, "GET {target}");
        // Refusals are immediate: none of these waits like a blocking request.
        assert_eq!(held().await, before, "GET {target} was held");
    }
    // The counter does see a request that waits: a blocking reload for
    // the hinted part.
    let before = held().await;
    let now =
        common::llhls::parse_media(&get(&server.url(&format!("/live/w/{video}"))).await.text());
    let (msn, part) = common::llhls::part_numbers(&now.hint.unwrap());
    let blocked =
        get(&server.url(&format!("/live/w/{video}?_HLS_msn={msn}&_HLS_part={part}"))).await;
    assert_eq!(blocked.status, 200);
    assert!(held().await > before, "a blocking reload was not counted");
    // Something far too long for any server is refused too (431/414/400).
    let huge = format!("/live/w/{}", "b".repeat(100_000));
    let status = raw_status(server.http, &huge).await;
    assert!((400..500).contains(&status) || status == 0, "{status}");

    // Still serving.
    let r = get(&server.url(&format!("/live/w/{video}"))).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("#EXT-X-PART:"));
    server.stop().await;
}

/// Shutdown waits for requests in flight only until `http.shutdown_timeout`:
/// a request whose body stops halfway does not hold the server up.
#[tokio::test(flavor = "current_thread")]
async fn shutdown_does_not_wait_for_a_half_sent_request() {
    let (logs, _guard) = Logs::capture();
    let server = TestServer::start(|c| {
        c.http.shutdown_timeout = Duration::from_secs(1);
    })
    .await;
    let token = server
        .access
        .auth
        .mint_api("test", Duration::from_secs(600));
    let mut s = TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /api/streams HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The request is in flight (its handler reads the body) before the stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown hung on a half-sent request");
    logs.wait_for(
        &["closing http connections still open at the shutdown deadline"],
        Duration::from_secs(1),
    )
    .await;
}

/// A connection from `src` (a loopback address) to `to`.
async fn connect_from(src: [u8; 4], to: std::net::SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind((std::net::Ipv4Addr::from(src), 0).into()).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the server closes `s` within 10 s without a byte sent.
async fn closed_at_once(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// One address holds at most `http.max_connections_per_ip` connections,
/// and the server at most `http.max_connections`: each one past a cap is
/// closed at accept and counted, and a freed place is taken again.
#[tokio::test(flavor = "current_thread")]
async fn http_connections_are_capped_per_address_and_in_total() {
    let server = TestServer::start(|c| {
        c.http.max_connections_per_ip = 3;
        c.http.max_connections = 6;
        // Idle connections must outlive the test's checks.
        c.http.header_timeout = Duration::from_secs(60);
    })
    .await;
    let refused = "streamd_http_refused_connections_total";
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(connect_from([127, 0, 3, 1], server.http).await);
    }
    let mut over = connect_from([127, 0, 3, 1], server.http).await;
    assert!(closed_at_once(&mut over).await, "a 4th from one address");
    // Another address still gets in, up to the total.
    let mut b = Vec::new();
    for _ in 0..3 {
        b.push(connect_from([127, 0, 3, 2], server.http).await);
    }
    let mut over = connect_from([127, 0, 3, 3], server.http).await;
    assert!(closed_at_once(&mut over).await, "a 7th in all");
    // The places held are real: each still serves a request.
    let r = b[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    assert!(r.is_ok());
    let mut answer = Vec::new();
    b[0].read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // That one is closed now: its place is free again (once the server
    // has seen it close; until then a newcomer is refused and counted).
    let mut freed = None;
    let mut refused_meanwhile = 0.0;
    for _ in 0..50 {
        let mut s = connect_from([127, 0, 3, 3], server.http).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            freed = Some(answer);
            break;
        }
        refused_meanwhile += 1.0;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed.is_some(), "the freed place was not given again");
    // Room for the check: five places held at most.
    drop(a);
    assert_eq!(server.metric(refused).await, 2.0 + refused_meanwhile);
    drop(b);
    server.stop().await;
}
