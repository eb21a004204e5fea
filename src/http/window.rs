//! HTTP/2 responses that a client stops taking. Over HTTP/1.1 a client
//! that reads nothing stalls the socket, and [`super::stall`] drops it.
//! Over HTTP/2 a client can keep the socket moving (pings, other streams)
//! and grant a response's stream no flow-control window: hyper then holds
//! the body's next chunk, and h2 the bytes it buffered, until the
//! connection ends. Many such streams on many connections pin memory (old
//! segments, recordings read from the store) for as long as the client
//! likes.
//!
//! So each HTTP/2 connection follows its frames, both ways ([`Frames`],
//! sans-IO, fed by [`Watched`] as bytes are read and written): which
//! responses are open (the server's HEADERS sent, its END_STREAM not yet
//! written and the stream not reset by either side), and how much DATA was
//! written. A connection with a response open that writes less than
//! [`MIN_PROGRESS`] of DATA in `http.send_timeout` is closed, as nginx's
//! `send_timeout` does. A response's stream ends only once its last byte is
//! written, so data h2 holds for want of window keeps it open; a client's
//! RST_STREAM closes it, and what h2 then drops is not owed.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Writing less DATA than this in `send_timeout`, with a response open,
/// is a stall. (A few pings or a trickle of window do not keep a
/// connection.)
pub const MIN_PROGRESS: u64 = 16 << 10;

const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
/// What a client sends before its first frame.
const PREFACE_LEN: usize = 24;

/// Frame headers, cut out of a byte stream fed in any pieces.
#[derive(Debug, Default)]
struct Splitter {
    /// Bytes still to skip before the first frame (the client's preface).
    skip: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes left in the current frame.
    left: u32,
    /// The current frame is DATA: its payload is counted.
    data: bool,
}

/// A frame's type, flags and stream.
type Head = (u8, u8, u32);

impl Splitter {
    /// Feeds bytes; `on` sees each frame header. Returns the DATA payload
    /// bytes among them.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Head)) -> u64 {
        let mut data = 0u64;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let take = self.skip.min(bytes.len());
                self.skip -= take;
                bytes = &bytes[take..];
            } else if self.left > 0 {
                let take = (self.left as usize).min(bytes.len());
                if self.data {
                    data += take as u64;
                }
                self.left -= take as u32;
                bytes = &bytes[take..];
            } else {
                let take = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 9 {
                    self.have = 0;
                    let h = self.header;
                    self.left = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    self.data = h[3] == DATA;
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    on((h[3], h[4], stream));
                }
            }
        }
        data
    }
}

/// One HTTP/2 connection's frames, as the server reads and writes them.
#[derive(Debug)]
pub struct Frames {
    read: Splitter,
    written: Splitter,
    /// Streams whose response is open.
    open: HashSet<u32>,
    /// DATA payload bytes written.
    data: u64,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            read: Splitter {
                skip: PREFACE_LEN,
                ..Splitter::default()
            },
            written: Splitter::default(),
            open: HashSet::new(),
            data: 0,
        }
    }
}

impl Frames {
    /// Bytes the client sent, in order.
    pub fn read(&mut self, bytes: &[u8]) {
        let open = &mut self.open;
        self.read.feed(bytes, |(kind, _, stream)| {
            if kind == RST_STREAM {
                open.remove(&stream);
            }
        });
    }

    /// Bytes the server wrote, in order.
    pub fn written(&mut self, bytes: &[u8]) {
        let open = &mut self.open;
        self.data += self.written.feed(bytes, |(kind, flags, stream)| {
            let ends = flags & END_STREAM != 0;
            match kind {
                HEADERS if !ends => {
                    open.insert(stream);
                }
                HEADERS | DATA if ends => {
                    open.remove(&stream);
                }
                RST_STREAM => {
                    open.remove(&stream);
                }
                _ => {}
            }
        });
    }

    /// DATA bytes written so far, and whether a response is open.
    pub fn status(&self) -> (u64, bool) {
        (self.data, !self.open.is_empty())
    }
}

/// Whether a connection stalls: fed its [`Frames::status`] at intervals.
#[derive(Debug)]
pub struct Watch {
    /// DATA written when progress was last seen, and when.
    mark: u64,
    since: Instant,
}

impl Watch {
    pub fn new(now: Instant) -> Watch {
        Watch {
            mark: 0,
            since: now,
        }
    }

    /// True once a response has been open for `limit` with less than
    /// [`MIN_PROGRESS`] of DATA written meanwhile.
    pub fn stalled(&mut self, (written, open): (u64, bool), now: Instant, limit: Duration) -> bool {
        if !open || written >= self.mark + MIN_PROGRESS {
            self.mark = written;
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= limit
    }
}

/// A connection's byte stream, its frames followed into `frames`.
pub struct Watched<I> {
    inner: I,
    frames: Arc<Mutex<Frames>>,
}

impl<I> Watched<I> {
    pub fn new(inner: I, frames: Arc<Mutex<Frames>>) -> Self {
        Watched { inner, frames }
    }

    fn frames(&self) -> std::sync::MutexGuard<'_, Frames> {
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wrote(&self, bufs: &[io::IoSlice<'_>], mut n: usize) {
        let mut frames = self.frames();
        for b in bufs {
            if n == 0 {
                break;
            }
            let take = b.len().min(n);
            frames.written(&b[..take]);
            n -= take;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r
            && buf.filled().len() > before
        {
            self.frames().read(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote(&[io::IoSlice::new(buf)], n);
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
            self.wrote(bufs, n);
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

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// The server's side of three responses: 1 ended by its last DATA, 3
    /// by trailers, 5 left open; SETTINGS and PING between.
    fn server_bytes() -> Vec<u8> {
        let mut w = frame(4, 0, 0, &[0; 6]);
        w.extend(frame(HEADERS, 0x4, 1, b"head"));
        w.extend(frame(DATA, 0, 1, &[7; 1000]));
        w.extend(frame(HEADERS, 0x4, 3, b"head"));
        w.extend(frame(6, 0, 0, &[0; 8]));
        w.extend(frame(DATA, 0, 3, &[7; 20_000]));
        w.extend(frame(DATA, END_STREAM, 1, &[]));
        w.extend(frame(HEADERS, 0x4 | END_STREAM, 3, b"trailers"));
        w.extend(frame(HEADERS, 0x4, 5, b"head"));
        w.extend(frame(DATA, 0, 5, &[1; 500]));
        w
    }

    #[test]
    fn follows_responses_and_counts_data_across_any_split() {
        let w = server_bytes();
        for split in [1, 2, 5, 9, 10, 333, w.len()] {
            let mut f = Frames::default();
            for piece in w.chunks(split) {
                f.written(piece);
            }
            assert_eq!(f.status(), (21_500, true), "split {split}");
            assert_eq!(f.open, HashSet::from([5]), "split {split}");
        }
    }

    #[test]
    fn a_reset_either_way_or_a_headers_only_response_leaves_nothing_open() {
        let mut f = Frames::default();
        f.written(&server_bytes());
        // The client cancels stream 5 (after its preface and SETTINGS).
        let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        r.extend(frame(4, 0, 0, &[]));
        r.extend(frame(DATA, 0, 7, &[9; 300])); // a request body
        r.extend(frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()));
        for piece in r.chunks(7) {
            f.read(piece);
        }
        assert_eq!(f.status(), (21_500, false));
        // A 204 ends in its HEADERS; a stream the server resets ends too.
        f.written(&frame(HEADERS, 0x4 | END_STREAM, 7, b"204"));
        f.written(&frame(HEADERS, 0x4, 9, b"head"));
        assert!(f.status().1);
        f.written(&frame(RST_STREAM, 0, 9, &2u32.to_be_bytes()));
        assert_eq!(f.status(), (21_500, false));
    }

    /// A writer that takes at most `max` bytes a call.
    struct Short {
        max: usize,
        got: Vec<u8>,
    }

    impl AsyncWrite for Short {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn short_vectored_writes_are_followed_by_what_was_taken() {
        use tokio::io::AsyncWriteExt;
        let bytes = server_bytes();
        let frames = Arc::new(Mutex::new(Frames::default()));
        let mut w = Watched::new(
            Short {
                max: 13,
                got: vec![],
            },
            frames.clone(),
        );
        // Written as three slices at a time, of which 13 bytes are taken.
        let mut at = 0;
        while at < bytes.len() {
            let (a, rest) = bytes[at..].split_at((bytes.len() - at).min(5));
            let (b, c) = rest.split_at(rest.len().min(4));
            let slices = [
                io::IoSlice::new(a),
                io::IoSlice::new(b),
                io::IoSlice::new(c),
            ];
            at += w.write_vectored(&slices).await.unwrap();
        }
        assert_eq!(w.inner.got, bytes);
        assert_eq!(frames.lock().unwrap().status(), (21_500, true));
    }

    #[test]
    fn a_connection_with_a_response_open_that_writes_too_little_stalls() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let mut w = Watch::new(t0);
        let at = |s| t0 + Duration::from_secs(s);
        // Nothing open: never a stall, however long.
        assert!(!w.stalled((0, false), at(100), limit));
        // Open and moving: fine.
        assert!(!w.stalled((20_000, true), at(110), limit));
        // A trickle (a few bytes of window at a time) is not progress...
        assert!(!w.stalled((20_100, true), at(130), limit));
        assert!(w.stalled((20_200, true), at(140), limit));
        // ...but every response ending is.
        assert!(!w.stalled((25_000, false), at(141), limit));
        assert!(!w.stalled((25_000, true), at(170), limit));
        assert!(w.stalled((25_000, true), at(171), limit));
    }
}
