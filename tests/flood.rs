//! Connection floods against the real server: 600 slowloris sockets on the
//! HTTP port and 2,000 idle sockets on each TCP port (HTTP, RTMP, ICE-TCP),
//! from 100 loopback addresses. While they are held, a witness stream stays
//! served and the API answers; the server then closes every one of them at
//! its deadline (header, handshake, first-packet), and its file descriptors
//! come back to where they were.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const IDLE_PER_PORT: usize = 2000;
const SLOWLORIS: usize = 600;
const SOURCES: usize = 100;
/// How long the server may take to close what it should close: its
/// deadlines are 2 s (HTTP headers, RTMP handshake) and 10 s (ICE-TCP's first
/// packet); this is generous, for a busy two-core machine.
const CLOSE_WITHIN: Duration = Duration::from_secs(60);

/// Attack traffic comes from 127.0.2.1 to 127.0.2.100; the checks from
/// 127.0.0.1.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, 1 + (i % SOURCES) as u8)
}

async fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind((src, 0).into())?;
    s.connect(to).await
}

/// Client and server ends of every socket live in this process.
fn raise_fd_limit(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass, nothing else.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= need,
            "this test needs {need} file descriptors; the hard limit is {} (raise it: ulimit -Hn)",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// True once the server closed `s` (EOF or reset); `trickle` sends a header
/// byte every 500 ms meanwhile.
async fn closed_by_server(mut s: TcpStream, trickle: bool) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(500)), if trickle => {
                if s.write_all(b"X").await.is_err() {
                    return true;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn slowloris_and_idle_sockets_leave_the_stream_and_api_served() {
    // Both ends of every socket, and room for the server itself.
    raise_fd_limit(2 * (3 * IDLE_PER_PORT + SLOWLORIS) as u64 + 2000);
    let server = TestServer::start(|c| {
        c.http.header_timeout = Duration::from_secs(2);
        c.rtmp.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let _witness = common::rtmp::spawn_witness(server.rtmp, "live", "witness").await;
    server.master_when_ready("live", "witness").await;
    let api_token = server
        .access
        .auth
        .mint_api("flood-test", Duration::from_secs(600));
    let bearer = format!("Bearer {api_token}");
    let api_answers = || async {
        let r = request(
            "GET",
            &server.url("/api/streams"),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let baseline = open_fds();

    let ports = [
        ("http", server.http),
        ("rtmp", server.rtmp),
        ("ice-tcp", server.webrtc_tcp.expect("ICE-TCP listener")),
    ];
    let mut idle = Vec::new();
    for i in 0..IDLE_PER_PORT {
        for (name, addr) in ports {
            let s = connect_from(source(i), addr)
                .await
                .unwrap_or_else(|e| panic!("idle socket {i} to {name}: {e}"));
            idle.push((name, s));
        }
    }
    let mut slow = Vec::new();
    for i in 0..SLOWLORIS {
        let mut s = connect_from(source(i), server.http).await.unwrap();
        s.write_all(b"GET /live/witness/llhls.m3u8 HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let slow_closed: Vec<_> = slow
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, true)))
        .collect();

    // Everything is held now: the stream plays on and the API answers.
    stream_advances(&server, "live", "witness", Duration::from_secs(10)).await;
    api_answers().await;

    // Every attacking socket is closed by the server.
    let idle_closed: Vec<_> = idle
        .into_iter()
        .map(|(name, s)| (name, tokio::spawn(closed_by_server(s, false))))
        .collect();
    let mut left_open = 0;
    for t in slow_closed {
        if !t.await.unwrap() {
            left_open += 1;
        }
    }
    assert_eq!(left_open, 0, "slowloris sockets the server left open");
    for (name, t) in idle_closed {
        assert!(t.await.unwrap(), "an idle {name} socket was left open");
    }

    // Nothing leaked, and everything still works.
    let deadline = tokio::time::Instant::now() + CLOSE_WITHIN;
    while open_fds() > baseline + 20 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        open_fds() <= baseline + 20,
        "{} file descriptors open, {baseline} before the flood",
        open_fds()
    );
    stream_advances(&server, "live", "witness", Duration::from_secs(10)).await;
    api_answers().await;
    server.stop().await;
}
