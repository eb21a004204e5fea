//! Which addresses browsers are offered as ICE host candidates.
//!
//! Behind NAT, in Docker or in Kubernetes the address the server sees is
//! not the one browsers reach; a wrong candidate is the most common reason
//! WebRTC connects nowhere. So the set is explicit: `webrtc.candidate_ips`
//! (IPs, or `*` for every interface address), replaced by the environment
//! variable `STREAMD_HOST_IP` (or OME's `OME_HOST_IP`) when set.

use std::net::{IpAddr, SocketAddr};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CandidateError {
    #[error("{0:?} is not an IP address (in webrtc.candidate_ips or STREAMD_HOST_IP)")]
    NotAnIp(String),
    #[error(
        "no address to offer WebRTC viewers: set webrtc.candidate_ips or STREAMD_HOST_IP to the IP browsers reach"
    )]
    None,
}

/// `STREAMD_HOST_IP`, else `OME_HOST_IP`, split on commas.
pub fn env_override() -> Option<Vec<String>> {
    let v = std::env::var("STREAMD_HOST_IP")
        .or_else(|_| std::env::var("OME_HOST_IP"))
        .ok()?;
    let list: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The IPs to offer for a socket bound to `local`.
pub fn resolve(
    configured: &[String],
    local: SocketAddr,
    env: Option<Vec<String>>,
) -> Result<Vec<IpAddr>, CandidateError> {
    let entries = env.unwrap_or_else(|| configured.to_vec());
    let mut out: Vec<IpAddr> = Vec::new();
    for e in &entries {
        if e == "*" {
            if local.ip().is_unspecified() {
                let v6 = local.is_ipv6();
                out.extend(
                    interface_addresses()
                        .into_iter()
                        .filter(|ip| ip.is_ipv4() || v6),
                );
            } else {
                out.push(local.ip());
            }
        } else {
            out.push(e.parse().map_err(|_| CandidateError::NotAnIp(e.clone()))?);
        }
    }
    // Routable addresses first, loopback last; no duplicates.
    out.sort_by_key(|ip| ip.is_loopback());
    let mut seen = Vec::new();
    out.retain(|ip| {
        let fresh = !seen.contains(ip);
        seen.push(*ip);
        fresh
    });
    if out.is_empty() {
        return Err(CandidateError::None);
    }
    Ok(out)
}

/// Every up interface's IPv4 address and global IPv6 address.
fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // Safety: getifaddrs fills `ifap` with a list we free below; on
    // failure it returns -1 and leaves it untouched.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return out;
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // Safety: `cur` is a node of the list getifaddrs returned, alive
        // until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as u32 != 0;
        if !up || ifa.ifa_addr.is_null() {
            continue;
        }
        // Safety: ifa_addr is non-null and points at a sockaddr whose
        // family says which struct it is.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // Safety: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_link_local() {
                out.push(IpAddr::V4(ip));
            }
        } else if family == libc::AF_INET6 {
            // Safety: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            if !link_local {
                out.push(IpAddr::V6(ip));
            }
        }
    }
    // Safety: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(ifap) };
    out
}

/// Larger socket buffers: a keyframe for a thousand viewers is a burst of
/// tens of thousands of datagrams.
pub fn tune_socket(socket: &tokio::net::UdpSocket) {
    socket_buffer(socket, Buffer::Send, 8 << 20);
    socket_buffer(socket, Buffer::Receive, 8 << 20);
}

/// A socket's send or receive buffer.
#[derive(Clone, Copy)]
pub enum Buffer {
    Send,
    Receive,
}

/// Sets `socket`'s `which` buffer to `bytes`. The FORCE options pass
/// net.core.{w,r}mem_max (they need CAP_NET_ADMIN); without it the plain
/// ones are capped at that maximum. Failure only leaves the default size.
pub fn socket_buffer(socket: &impl std::os::fd::AsRawFd, which: Buffer, bytes: libc::c_int) {
    let (force, plain) = match which {
        Buffer::Send => (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        Buffer::Receive => (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    };
    let set = |opt| {
        // Safety: a valid socket fd and a c_int option value of the
        // stated size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &bytes as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(force) {
        set(plain);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ips_and_env_override() {
        let local: SocketAddr = "0.0.0.0:10000".parse().unwrap();
        let ips = resolve(&["203.0.113.7".into(), "127.0.0.1".into()], local, None).unwrap();
        assert_eq!(
            ips,
            [
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        let ips = resolve(&["*".into()], local, Some(vec!["198.51.100.2".into()])).unwrap();
        assert_eq!(ips, ["198.51.100.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            resolve(&["host.example".into()], local, None),
            Err(CandidateError::NotAnIp("host.example".into()))
        );
    }

    #[test]
    fn star_is_the_bound_ip_or_every_interface() {
        let ips = resolve(&["*".into()], "127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let all = resolve(&["*".into()], "0.0.0.0:0".parse().unwrap(), None).unwrap();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        assert!(all.iter().all(|ip| ip.is_ipv4()));
        assert!(all.last().unwrap().is_loopback(), "loopback last: {all:?}");
    }
}
