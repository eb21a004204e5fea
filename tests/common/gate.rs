//! A TCP proxy in front of a service that can go down (a store, a
//! database): unless open, it cuts the connections it carries and answers
//! new ones as its mode says.

use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the gate does.
#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Mode {
    /// Passes requests through.
    Open,
    /// Answers every request with a 503.
    Refuse,
    /// Answers every request with bytes that are not HTTP.
    Garbage,
    /// Closes every connection at once, saying nothing.
    Closed,
}

pub struct Gate {
    pub addr: SocketAddr,
    pub mode: watch::Sender<Mode>,
}

/// A gate to `target` on a free loopback port, open.
pub async fn gate(target: SocketAddr) -> Gate {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (mode, rx) = watch::channel(Mode::Open);
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let mut rx = rx.clone();
            tokio::spawn(async move {
                let now = *rx.borrow();
                let reply: &[u8] = match now {
                    Mode::Open => b"",
                    Mode::Refuse => b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    Mode::Garbage => b"\x00\xff\x13not http at all\r\n\r\n\x00",
                    Mode::Closed => b"",
                };
                if now != Mode::Open {
                    let _ = client.write_all(reply).await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    _ = rx.wait_for(|m| *m != Mode::Open) => {}
                }
            });
        }
    });
    Gate { addr, mode }
}
