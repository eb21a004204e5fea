//! HTTP/2 responses that a client stops taking. Over HTTP/1.1 a client
//! that reads nothing stalls the socket, and [`super::stall`] drops it.
//! Over HTTP/2 a client can keep the socket moving (pings, other streams)
//! and grant a response's stream no flow-control window: hyper then holds
//! what the response handed it, and h2 the bytes it buffered, until the
//! connection ends. Many such streams on many connections pin memory (old
//! segments, recordings read from the store) for as long as the client
//! likes.
//!
//! So each HTTP/2 connection counts the DATA bytes its responses handed to
//! hyper ([`Counted`] bodies) and the DATA bytes written to the connection
//! ([`DataWriter`], which follows the frames it writes). A connection
//! with bytes owed that delivers less than [`MIN_PROGRESS`] of them in
//! `http.send_timeout` is closed, as nginx's `send_timeout` does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Buf;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Delivering less than this in `send_timeout`, with bytes owed, is a
/// stall. (A few pings or a trickle of window do not keep a connection.)
pub const MIN_PROGRESS: u64 = 16 << 10;

/// One HTTP/2 connection's DATA, handed and written.
#[derive(Debug, Default)]
pub struct Flow {
    handed: AtomicU64,
    written: AtomicU64,
}

impl Flow {
    /// DATA bytes written so far, and those handed but not yet written.
    pub fn status(&self) -> (u64, u64) {
        let written = self.written.load(Ordering::Relaxed);
        let handed = self.handed.load(Ordering::Relaxed);
        (written, handed.saturating_sub(written))
    }
}

/// Whether a connection stalls: fed its [`Flow::status`] at intervals.
#[derive(Debug)]
pub struct Watch {
    /// Written when progress was last seen, and when.
    mark: u64,
    since: tokio::time::Instant,
}

impl Watch {
    pub fn new(now: tokio::time::Instant) -> Watch {
        Watch {
            mark: 0,
            since: now,
        }
    }

    /// True once bytes are owed and less than [`MIN_PROGRESS`] of them
    /// (or than all that is owed) was written in `limit`.
    pub fn stalled(
        &mut self,
        (written, owed): (u64, u64),
        now: tokio::time::Instant,
        limit: std::time::Duration,
    ) -> bool {
        if owed == 0 || written >= self.mark + MIN_PROGRESS {
            self.mark = written;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= limit
    }
}

/// A response body whose DATA is counted as handed to hyper.
pub fn counted(body: Body, flow: Arc<Flow>) -> Body {
    Body::new(Counted { inner: body, flow })
}

struct Counted {
    inner: Body,
    flow: Arc<Flow>,
}

impl HttpBody for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r
            && let Some(data) = frame.data_ref()
        {
            self.flow
                .handed
                .fetch_add(data.remaining() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Follows the HTTP/2 frames written through it and counts DATA payload.
/// Sans-IO: fed the bytes the connection accepted, in order.
#[derive(Debug, Default)]
pub struct FrameCounter {
    header: [u8; 9],
    have: usize,
    /// Payload bytes left in the current frame.
    left: u32,
    data: bool,
}

impl FrameCounter {
    /// Feeds written bytes; returns how many of them were DATA payload.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut data = 0u64;
        while !bytes.is_empty() {
            if self.left > 0 {
                let take = (self.left as usize).min(bytes.len());
                if self.data {
                    data += take as u64;
                }
                self.left -= take as u32;
                bytes = &bytes[take..];
                continue;
            }
            let take = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have == 9 {
                self.have = 0;
                let h = &self.header;
                self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                self.data = h[3] == 0;
            }
        }
        data
    }
}

/// A connection's writer that counts the DATA it writes into `flow`.
pub struct DataWriter<I> {
    inner: I,
    frames: FrameCounter,
    flow: Arc<Flow>,
}

impl<I> DataWriter<I> {
    pub fn new(inner: I, flow: Arc<Flow>) -> Self {
        DataWriter {
            inner,
            frames: FrameCounter::default(),
            flow,
        }
    }

    fn count(&mut self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        let mut data = 0;
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = b.len().min(n);
            data += self.frames.feed(&b[..take]);
            n -= take;
        }
        if data > 0 {
            self.flow.written.fetch_add(data, Ordering::Relaxed);
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for DataWriter<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for DataWriter<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.count(&[io::IoSlice::new(buf)], n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.count(bufs, n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn counts_data_payload_across_any_split() {
        let mut stream = frame(4, &[0; 6]); // SETTINGS
        stream.extend(frame(1, b"headers")); // HEADERS
        stream.extend(frame(0, &[7; 1000])); // DATA
        stream.extend(frame(6, &[0; 8])); // PING
        stream.extend(frame(0, &[])); // empty DATA (END_STREAM)
        stream.extend(frame(0, &[1; 20_000]));
        for split in [1, 2, 5, 9, 10, 333, stream.len()] {
            let mut c = FrameCounter::default();
            let total: u64 = stream.chunks(split).map(|b| c.feed(b)).sum();
            assert_eq!(total, 21_000, "split {split}");
        }
    }

    #[test]
    fn a_connection_owing_bytes_that_delivers_too_little_stalls() {
        let t0 = tokio::time::Instant::now();
        let limit = Duration::from_secs(30);
        let mut w = Watch::new(t0);
        let at = |s| t0 + Duration::from_secs(s);
        // Nothing owed: never a stall, however long.
        assert!(!w.stalled((0, 0), at(100), limit));
        // Owed and moving: fine.
        assert!(!w.stalled((20_000, 5_000), at(110), limit));
        // A trickle (a few bytes of window at a time) is not progress...
        assert!(!w.stalled((20_100, 5_000), at(130), limit));
        assert!(w.stalled((20_200, 5_000), at(140), limit));
        // ...but all that is owed being written is.
        assert!(!w.stalled((25_000, 0), at(141), limit));
        assert!(!w.stalled((25_000, 10), at(170), limit));
        assert!(w.stalled((25_000, 10), at(171), limit));
    }
}
