//! Client addresses: blocks of them (trusted proxies), shared by the
//! configuration's checks and the listeners; binding those listeners; and
//! which of our ICE candidates a peer's packet reached.

/// Binds a TCP listener on each of `addrs`; the first that cannot be bound
/// is an error naming the protocol (`what`) and the address.
pub async fn listen_all(
    addrs: &[std::net::SocketAddr],
    what: &str,
) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        listeners.push(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))?,
        );
    }
    Ok(listeners)
}

/// `addr` as the C socket API takes it (for `sendmmsg`, libsrt).
pub fn sockaddr(addr: std::net::SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    use std::net::SocketAddr;
    // SAFETY: sockaddr_storage is plain data; zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // Zeroed, then set: platforms differ in their other fields.
            // SAFETY: plain data; zero is a valid value.
            let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            // SAFETY: sockaddr_storage is larger than sockaddr_in and
            // suitably aligned for it.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in>(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: plain data; zero is a valid value.
            let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast::<libc::sockaddr_in6>(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// The IP address and port in `storage`, if it holds one.
pub fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in, which the
            // storage is large and aligned enough to hold.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// An address or a CIDR block (`10.0.0.0/8`, `::1`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    net: std::net::IpAddr,
    prefix: u8,
}

impl IpBlock {
    pub fn parse(s: &str) -> Result<IpBlock, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(IpBlock { net, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: std::net::IpAddr| -> u128 {
            match a {
                std::net::IpAddr::V4(v) => u128::from(u32::from(v)),
                std::net::IpAddr::V6(v) => u128::from(v),
            }
        };
        if ip.is_ipv4() != self.net.is_ipv4() {
            return false;
        }
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let shift = width - u32::from(self.prefix);
        if shift >= 128 {
            return true;
        }
        (bits(ip) >> shift) == (bits(self.net) >> shift)
    }
}

/// The advertised candidate address a datagram (or ICE-TCP connection)
/// from `src` most likely reached (str0m matches STUN to a local candidate
/// by it): one of the same family and the same loopback-ness, else one of
/// the same family, else the first.
pub fn candidate_reached(
    candidates: &[std::net::SocketAddr],
    src: std::net::SocketAddr,
) -> std::net::SocketAddr {
    candidates
        .iter()
        .find(|c| c.is_ipv4() == src.is_ipv4() && c.ip().is_loopback() == src.ip().is_loopback())
        .or_else(|| candidates.iter().find(|c| c.is_ipv4() == src.is_ipv4()))
        .or(candidates.first())
        .copied()
        .unwrap_or(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_blocks() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let b = IpBlock::parse("10.0.0.0/8").unwrap();
        assert!(b.contains(ip("10.1.2.3")));
        assert!(b.contains(ip("::ffff:10.1.2.3")));
        assert!(!b.contains(ip("11.0.0.1")));
        assert!(!b.contains(ip("::1")));
        let one = IpBlock::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")));
        assert!(!one.contains(ip("127.0.0.2")));
        assert!(IpBlock::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(IpBlock::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(IpBlock::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        for bad in ["10.0.0.0/33", "::/129", "host", "10.0.0.0/x", ""] {
            assert!(IpBlock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_candidate_reached_matches_family_and_loopback() {
        let c: Vec<std::net::SocketAddr> = vec![
            "10.0.0.5:10000".parse().unwrap(),
            "127.0.0.1:10000".parse().unwrap(),
        ];
        assert_eq!(
            candidate_reached(&c, "127.0.0.1:5000".parse().unwrap()),
            c[1]
        );
        assert_eq!(
            candidate_reached(&c, "192.168.1.9:5000".parse().unwrap()),
            c[0]
        );
        let none = "[::1]:5000".parse().unwrap();
        assert_eq!(
            candidate_reached(&c, none),
            c[0],
            "no family match: the first"
        );
        assert_eq!(candidate_reached(&[], none), none);
    }
}
