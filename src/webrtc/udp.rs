//! Batched UDP sends for the engine's one socket.
//!
//! The engine queues every datagram it produces while handling one event
//! (a frame for every viewer, a burst of input) and flushes them together.
//! On Linux a flush is one `sendmmsg` per 64 messages, and each message
//! carries a run of datagrams to one destination as a UDP GSO super-packet
//! (`UDP_SEGMENT`): a viewer's packets of one frame are all full-size but
//! the last, which is exactly the shape GSO takes, so the kernel walks its
//! UDP/IP stack once per frame and viewer instead of once per packet. Where
//! GSO is refused (an old kernel, a device without checksum offload) the
//! queue falls back to one message per datagram, still one syscall per 64.
//! Elsewhere it sends datagram by datagram.
//!
//! A full socket buffer drops what does not fit (counted; NACK and the
//! next keyframe recover): the engine never waits on a slow network.

use std::net::SocketAddr;
use std::ops::Range;

use tokio::net::UdpSocket;

/// Most datagrams queued before a push flushes by itself.
const MAX_QUEUED: usize = 512;
/// Most bytes queued before a push flushes by itself. A frame fanned out
/// to every viewer is queued at once (a keyframe to 1,000 viewers is tens
/// of megabytes), and a buffer keeps the size of its largest fill: with
/// 4,096 datagrams and no byte bound, a 400-viewer run held 8 MB here, a
/// fifth of the server's heap (benches/README.md, `webrtc_load`). A flush
/// of this much is still a few full `sendmmsg` calls.
const MAX_QUEUED_BYTES: usize = 256 * 1024;
/// Linux's UDP_MAX_SEGMENTS.
const MAX_SEGMENTS: usize = 64;
/// A GSO super-packet's payload must fit one IP packet.
const MAX_GSO_BYTES: usize = 65_000;
/// Messages per sendmmsg call.
const MAX_BATCH: usize = 64;

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    /// System calls made.
    pub calls: u64,
    /// Messages sent as GSO super-packets (several datagrams each).
    pub gso_messages: u64,
    /// The first error met, if any (for the log).
    pub error: Option<i32>,
}

impl Flushed {
    fn add(&mut self, other: Flushed) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.dropped += other.dropped;
        self.calls += other.calls;
        self.gso_messages += other.gso_messages;
        self.error = self.error.or(other.error);
    }
}

/// Datagrams waiting to be sent, their bytes back to back in one buffer.
pub struct SendQueue {
    buf: Vec<u8>,
    items: Vec<(SocketAddr, Range<usize>)>,
    gso: bool,
}

impl Default for SendQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A run of queued datagrams sent as one message: `items[range]`, all to
/// one destination, `segment` bytes each but the last (0: one datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    items: Range<usize>,
    segment: usize,
}

impl SendQueue {
    pub fn new() -> SendQueue {
        SendQueue {
            buf: Vec::with_capacity(MAX_QUEUED_BYTES + 2048),
            items: Vec::with_capacity(MAX_QUEUED),
            gso: cfg!(target_os = "linux"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues `data` for `to`; flushes first when the queue is full.
    pub fn push(&mut self, socket: &UdpSocket, to: SocketAddr, data: &[u8]) -> Flushed {
        let flushed =
            if self.items.len() >= MAX_QUEUED || self.buf.len() + data.len() > MAX_QUEUED_BYTES {
                self.flush(socket)
            } else {
                Flushed::default()
            };
        let start = self.buf.len();
        self.buf.extend_from_slice(data);
        self.items.push((to, start..self.buf.len()));
        flushed
    }

    /// Sends everything queued.
    pub fn flush(&mut self, socket: &UdpSocket) -> Flushed {
        if self.items.is_empty() {
            return Flushed::default();
        }
        let groups = groups(&self.items, self.gso);
        let (mut done, refused) = self.send(socket, &groups);
        if let Some(from) = refused {
            // The kernel or device cannot segment: say so once, send the
            // rest as plain datagrams, and never try GSO again.
            tracing::warn!(
                error = %std::io::Error::from_raw_os_error(done.error.unwrap_or(0)),
                "UDP GSO refused: sending one datagram per message"
            );
            self.gso = false;
            let plain: Vec<Group> = groups_plain(self.items.len()).split_off(from);
            let (rest, _) = self.send(socket, &plain);
            done.add(rest);
        }
        self.items.clear();
        self.buf.clear();
        done
    }

    /// Sends `groups`; and, if the kernel refused GSO, the index of the
    /// first item not sent (nothing from there on was tried).
    #[cfg(target_os = "linux")]
    fn send(&self, socket: &UdpSocket, groups: &[Group]) -> (Flushed, Option<usize>) {
        use std::os::fd::AsRawFd;
        let fd = socket.as_raw_fd();
        let mut out = Flushed::default();
        let mut addrs = Vec::with_capacity(MAX_BATCH);
        let mut iovs = Vec::with_capacity(MAX_BATCH);
        let mut cmsgs = vec![[0u64; 4]; MAX_BATCH];
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(MAX_BATCH);
        let mut at = 0;
        while at < groups.len() {
            let batch = &groups[at..groups.len().min(at + MAX_BATCH)];
            addrs.clear();
            iovs.clear();
            msgs.clear();
            for g in batch {
                let first = &self.items[g.items.start];
                let last = &self.items[g.items.end - 1];
                addrs.push(crate::net::sockaddr(first.0));
                iovs.push(libc::iovec {
                    iov_base: self.buf[first.1.start..].as_ptr() as *mut libc::c_void,
                    iov_len: last.1.end - first.1.start,
                });
            }
            for (i, g) in batch.iter().enumerate() {
                // SAFETY: a zeroed msghdr is valid; every pointer set below
                // points into `addrs`, `iovs` or `cmsgs`, which outlive the
                // sendmmsg call and are not moved until it returns.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = &mut addrs[i].0 as *mut libc::sockaddr_storage as *mut libc::c_void;
                h.msg_namelen = addrs[i].1;
                h.msg_iov = &mut iovs[i];
                h.msg_iovlen = 1;
                if g.segment > 0 {
                    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) };
                    h.msg_control = cmsgs[i].as_mut_ptr() as *mut libc::c_void;
                    h.msg_controllen = space as usize;
                    // SAFETY: msg_control points at 32 bytes, enough for one
                    // cmsg carrying a u16 (CMSG_SPACE(2) is 24 on 64-bit).
                    unsafe {
                        let c = libc::CMSG_FIRSTHDR(&h);
                        (*c).cmsg_level = libc::SOL_UDP;
                        (*c).cmsg_type = libc::UDP_SEGMENT;
                        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
                        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, g.segment as u16);
                    }
                }
                msgs.push(libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                });
            }
            let mut from = 0;
            while from < msgs.len() {
                // SAFETY: msgs[from..] are valid mmsghdrs (see above); the
                // socket is non-blocking.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        msgs[from..].as_mut_ptr(),
                        (msgs.len() - from) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                out.calls += 1;
                if n > 0 {
                    for g in &batch[from..from + n as usize] {
                        out.gso_messages += u64::from(g.segment > 0);
                        out.packets += g.items.len() as u64;
                        out.bytes += self.bytes(&g.items) as u64;
                    }
                    from += n as usize;
                    continue;
                }
                let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                out.error = out.error.or(Some(err));
                if gso_refused(err) && batch[from].segment > 0 {
                    return (out, Some(batch[from].items.start));
                }
                if err == libc::EAGAIN || err == libc::ENOBUFS {
                    // The socket buffer is full: the rest of this flush
                    // would not fit either.
                    out.dropped += batch[from..]
                        .iter()
                        .chain(&groups[at + batch.len()..])
                        .map(|g| g.items.len() as u64)
                        .sum::<u64>();
                    return (out, None);
                }
                // This destination failed (unreachable, refused): skip it.
                out.dropped += batch[from].items.len() as u64;
                from += 1;
            }
            at += batch.len();
        }
        (out, None)
    }

    #[cfg(not(target_os = "linux"))]
    fn send(&self, socket: &UdpSocket, groups: &[Group]) -> (Flushed, Option<usize>) {
        let mut out = Flushed::default();
        for g in groups {
            for (to, range) in &self.items[g.items.clone()] {
                out.calls += 1;
                match socket.try_send_to(&self.buf[range.clone()], *to) {
                    Ok(n) => {
                        out.packets += 1;
                        out.bytes += n as u64;
                    }
                    Err(e) => {
                        out.dropped += 1;
                        out.error = out.error.or(e.raw_os_error());
                    }
                }
            }
        }
        (out, None)
    }

    fn bytes(&self, items: &Range<usize>) -> usize {
        self.items[items.end - 1].1.end - self.items[items.start].1.start
    }
}

/// The refusals that mean "no GSO here".
fn gso_refused(err: i32) -> bool {
    err == libc::EIO || err == libc::EINVAL || err == libc::EOPNOTSUPP
}

/// Splits queued datagrams into messages: with `gso`, runs to one
/// destination whose datagrams are all `segment` bytes but a shorter or
/// equal last one, at most MAX_SEGMENTS and MAX_GSO_BYTES each.
fn groups(items: &[(SocketAddr, Range<usize>)], gso: bool) -> Vec<Group> {
    if !gso {
        return groups_plain(items.len());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let (to, first) = &items[i];
        let segment = first.len();
        let mut end = i + 1;
        let mut total = segment;
        while end < items.len() && end - i < MAX_SEGMENTS {
            let (next_to, r) = &items[end];
            if next_to != to || r.len() > segment || total + r.len() > MAX_GSO_BYTES {
                break;
            }
            total += r.len();
            end += 1;
            if r.len() < segment {
                break; // a short datagram ends the run
            }
        }
        out.push(Group {
            items: i..end,
            segment: if end - i > 1 { segment } else { 0 },
        });
        i = end;
    }
    out
}

fn groups_plain(n: usize) -> Vec<Group> {
    (0..n)
        .map(|i| Group {
            items: i..i + 1,
            segment: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(spec: &[(u16, usize)]) -> Vec<(SocketAddr, Range<usize>)> {
        let mut at = 0;
        spec.iter()
            .map(|(port, len)| {
                let r = at..at + len;
                at += len;
                (SocketAddr::from(([127, 0, 0, 1], *port)), r)
            })
            .collect()
    }

    #[test]
    fn groups_runs_of_equal_datagrams_to_one_destination() {
        // Viewer A: a frame of three full packets and a short last one,
        // then an audio packet; viewer B: two packets.
        let it = items(&[
            (1, 1200),
            (1, 1200),
            (1, 1200),
            (1, 500),
            (1, 300),
            (2, 1200),
            (2, 1200),
        ]);
        let g = groups(&it, true);
        assert_eq!(
            g,
            vec![
                Group {
                    items: 0..4,
                    segment: 1200
                },
                Group {
                    items: 4..5,
                    segment: 0
                },
                Group {
                    items: 5..7,
                    segment: 1200
                },
            ]
        );
        // A larger datagram after a smaller one starts a new run.
        let g = groups(&items(&[(1, 300), (1, 1200)]), true);
        assert_eq!(g.len(), 2);
        assert!(g.iter().all(|g| g.segment == 0));
    }

    #[test]
    fn groups_respect_the_kernel_limits() {
        let it = items(&vec![(1, 100); 150]);
        let g = groups(&it, true);
        assert_eq!(
            g.iter().map(|g| g.items.len()).collect::<Vec<_>>(),
            [64, 64, 22]
        );
        let it = items(&vec![(1, 1400); 60]);
        let g = groups(&it, true);
        assert!(g.iter().all(|g| g.items.len() * 1400 <= MAX_GSO_BYTES));
        assert_eq!(g.iter().map(|g| g.items.len()).sum::<usize>(), 60);
        assert_eq!(groups(&it, false).len(), 60);
    }

    /// Every datagram arrives, intact and in order, whether sent as GSO
    /// runs or one by one.
    #[tokio::test]
    async fn flush_delivers_every_datagram() {
        for gso in [true, false] {
            let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let rx2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut q = SendQueue::new();
            q.gso &= gso;
            let mut sent = Vec::new();
            // Few enough to fit the receivers' default socket buffers.
            for i in 0..60u32 {
                let len = if i % 7 == 6 { 333 } else { 1100 };
                let data: Vec<u8> = (0..len).map(|b| (b as u32 ^ i) as u8).collect();
                let to = if i % 20 < 12 { &rx } else { &rx2 };
                q.push(&tx, to.local_addr().unwrap(), &data);
                sent.push((to.local_addr().unwrap(), data));
            }
            let f = q.flush(&tx);
            assert_eq!((f.packets, f.dropped), (60, 0), "{f:?}");
            assert!(q.is_empty());
            if gso {
                // Runs went out as super-packets (the kernel accepted
                // them: loopback segments in software), in few calls.
                assert!(q.gso, "GSO was refused here: {f:?}");
                assert!(f.gso_messages >= 3, "{f:?}");
                assert!(f.calls < 10, "{f:?}");
            } else {
                assert_eq!(f.gso_messages, 0, "{f:?}");
            }
            let mut buf = vec![0u8; 2048];
            for (to, data) in &sent {
                let sock = if *to == rx.local_addr().unwrap() {
                    &rx
                } else {
                    &rx2
                };
                let n =
                    tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv(&mut buf))
                        .await
                        .expect("datagram arrives")
                        .unwrap();
                assert_eq!(&buf[..n], &data[..]);
            }
        }
    }

    /// A fan-out far larger than the queue goes out in flushes of its
    /// own, and the queue's buffers never grow past their bound.
    #[tokio::test]
    async fn a_large_fan_out_flushes_as_it_goes_and_keeps_the_queue_small() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = rx.local_addr().unwrap();
        let mut q = SendQueue::new();
        let (buf_cap, items_cap) = (q.buf.capacity(), q.items.capacity());
        let mut pushed = Flushed::default();
        // 4 MB: what one keyframe to a few hundred viewers queues.
        for _ in 0..3500 {
            pushed.add(q.push(&tx, to, &[9; 1200]));
            assert!(q.buf.len() <= MAX_QUEUED_BYTES);
            assert!(q.items.len() <= MAX_QUEUED);
        }
        pushed.add(q.flush(&tx));
        assert_eq!(pushed.packets + pushed.dropped, 3500, "{pushed:?}");
        assert!(pushed.packets > 0, "{pushed:?}");
        assert_eq!(q.buf.capacity(), buf_cap);
        assert_eq!(q.items.capacity(), items_cap);
    }

    #[tokio::test]
    async fn an_unreachable_destination_drops_only_its_datagrams() {
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut q = SendQueue::new();
        // An IPv6 destination on an IPv4 socket fails (EAFNOSUPPORT/EINVAL
        // class errors) without stopping the rest.
        q.push(&tx, "[::1]:9".parse().unwrap(), &[1; 100]);
        q.push(&tx, rx.local_addr().unwrap(), &[2; 100]);
        let f = q.flush(&tx);
        assert_eq!(f.packets, 1, "{f:?}");
        assert_eq!(f.dropped, 1, "{f:?}");
        let mut buf = [0u8; 200];
        let n = rx.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[2; 100]);
    }
}
