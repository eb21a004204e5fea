//! Caps on open connections: all together, and per client address, so one
//! client cannot take every slot of a listener.
//!
//! A listener asks [`ConnectionLimit::try_acquire`] at accept and holds the
//! returned [`ConnectionPermit`] for the connection's life; dropping it frees
//! both slots. [`LimitedListener`] is that accept loop, for every TCP
//! listener that takes clients.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

use crate::ratelimit::LogLimiter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("too many connections ({0} open)")]
    Total(usize),
    #[error("too many connections from this address ({0} open)")]
    PerAddress(usize),
}

#[derive(Debug)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug, Clone)]
pub struct ConnectionLimit {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One open connection's slots, freed on drop.
#[derive(Debug)]
pub struct ConnectionPermit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they map.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl ConnectionLimit {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionLimit {
        ConnectionLimit {
            max_total,
            max_per_ip,
            counts: Arc::new(Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
            })),
        }
    }

    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let ip = canonical(ip);
        let mut counts = self.counts.lock().expect("connection counts lock");
        if counts.total >= self.max_total {
            return Err(LimitExceeded::Total(counts.total));
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.max_per_ip {
            return Err(LimitExceeded::PerAddress(from_ip));
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Ok(ConnectionPermit {
            ip,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().expect("connection counts lock").total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("connection counts lock");
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // The map holds only addresses with open connections.
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A TCP listener that hands out only connections within its caps: the
/// rest are closed at accept, counted in `refused_metric` and logged (at
/// most one line per 10 s).
pub struct LimitedListener {
    listener: TcpListener,
    limit: ConnectionLimit,
    /// What the log lines call it (`rtmp`, `http`).
    what: &'static str,
    refused_metric: &'static str,
    refuse_log: LogLimiter,
}

impl LimitedListener {
    pub fn new(
        listener: TcpListener,
        limit: ConnectionLimit,
        what: &'static str,
        refused_metric: &'static str,
    ) -> LimitedListener {
        LimitedListener {
            listener,
            limit,
            what,
            refused_metric,
            refuse_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// The next connection within the caps (TCP_NODELAY set), and its
    /// permit. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, ConnectionPermit) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "{} accept failed", self.what);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match self.limit.try_acquire(peer.ip()) {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    return (stream, peer, permit);
                }
                Err(e) => {
                    metrics::counter!(self.refused_metric).increment(1);
                    if let Some(suppressed) = self.refuse_log.check(Instant::now()) {
                        tracing::warn!(%peer, suppressed, "{} connection refused: {e}", self.what);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_and_total_caps() {
        let limit = ConnectionLimit::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limit.try_acquire(a).unwrap();
        let _p2 = limit.try_acquire(a_mapped).unwrap();
        assert_eq!(
            limit.try_acquire(a).unwrap_err(),
            LimitExceeded::PerAddress(2)
        );
        let _p3 = limit.try_acquire(b).unwrap();
        assert_eq!(limit.try_acquire(b).unwrap_err(), LimitExceeded::Total(3));
        drop(p1);
        assert_eq!(limit.open(), 2);
        let _p4 = limit.try_acquire(a).unwrap();
        drop(_p3);
        drop(_p4);
        drop(_p2);
        assert_eq!(limit.open(), 0);
        assert!(limit.counts.lock().unwrap().per_ip.is_empty());
    }
}
