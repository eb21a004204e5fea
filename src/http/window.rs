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
//! sans-IO, fed by [`Watched`] as bytes are read and written): the streams
//! the client opened, which of them the server is answering, the send
//! windows the client grants (SETTINGS_INITIAL_WINDOW_SIZE and
//! WINDOW_UPDATE, per stream and for the connection) and the DATA written
//! on each. A response whose stream (or the connection) has had no send
//! window, with under [`MIN_PROGRESS`] of its DATA written meanwhile, for
//! `http.send_timeout` is stalled, and its connection closed, as nginx's
//! `send_timeout` does. A response that is quiet because the server has
//! nothing to send yet (a slow store, a sparse track) still has window and
//! is not stalled. A stream ends at the server's END_STREAM or a
//! RST_STREAM either way; what h2 drops at a reset is not owed.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Writing less DATA than this on a response in `send_timeout`, while it
/// has no window, is a stall. (A trickle of window is not progress.)
pub const MIN_PROGRESS: u64 = 16 << 10;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// RFC 9113's initial windows.
const DEFAULT_WINDOW: i64 = 65_535;
/// What a client sends before its first frame.
const PREFACE_LEN: usize = 24;
/// Payloads kept to be read (SETTINGS, WINDOW_UPDATE) up to this size;
/// longer ones are not believed.
const KEEP_MAX: usize = 1024;

/// A frame: its type, flags, stream and length, and its payload when it
/// is one that is read (SETTINGS, WINDOW_UPDATE).
struct Frame<'a> {
    kind: u8,
    flags: u8,
    stream: u32,
    len: u32,
    payload: &'a [u8],
}

/// Frames cut out of a byte stream fed in any pieces.
#[derive(Debug, Default)]
struct Splitter {
    /// Bytes still to skip before the first frame (the client's preface).
    skip: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes left in the current frame.
    left: u32,
    /// The current frame's payload, kept when it is to be read.
    keep: Option<Vec<u8>>,
}

impl Splitter {
    fn head(&self) -> (u8, u8, u32, u32) {
        let h = &self.header;
        (
            h[3],
            h[4],
            u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            u32::from_be_bytes([0, h[0], h[1], h[2]]),
        )
    }

    /// Feeds bytes; `on` sees each frame, at its header, or once its
    /// payload is complete if that is kept.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let take = self.skip.min(bytes.len());
                self.skip -= take;
                bytes = &bytes[take..];
            } else if self.left > 0 {
                let take = (self.left as usize).min(bytes.len());
                if let Some(keep) = &mut self.keep {
                    keep.extend_from_slice(&bytes[..take]);
                }
                self.left -= take as u32;
                bytes = &bytes[take..];
                if self.left == 0
                    && let Some(keep) = self.keep.take()
                {
                    let (kind, flags, stream, len) = self.head();
                    on(Frame {
                        kind,
                        flags,
                        stream,
                        len,
                        payload: &keep,
                    });
                }
            } else {
                let take = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have == 9 {
                    self.have = 0;
                    let (kind, flags, stream, len) = self.head();
                    self.left = len;
                    let read = matches!(kind, SETTINGS | WINDOW_UPDATE);
                    if read && len > 0 && len as usize <= KEEP_MAX {
                        self.keep = Some(Vec::with_capacity(len as usize));
                    } else {
                        on(Frame {
                            kind,
                            flags,
                            stream,
                            len,
                            payload: &[],
                        });
                    }
                }
            }
        }
    }
}

/// A stream the client opened.
#[derive(Debug)]
struct Stream {
    /// Its send window.
    window: i64,
    /// The server has sent its response's HEADERS (not ending it).
    answering: bool,
    /// DATA written on it.
    written: u64,
    /// While it has no window: since when, and its DATA written then.
    blocked: Option<(Instant, u64)>,
}

/// One HTTP/2 connection's frames, as the server reads and writes them.
#[derive(Debug)]
pub struct Frames {
    read: Splitter,
    written: Splitter,
    /// Streams the client opened and the server has not ended, nor either
    /// side reset.
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened.
    last: u32,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    initial: i64,
    /// The connection's send window.
    connection: i64,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            read: Splitter {
                skip: PREFACE_LEN,
                ..Splitter::default()
            },
            written: Splitter::default(),
            streams: HashMap::new(),
            last: 0,
            initial: DEFAULT_WINDOW,
            connection: DEFAULT_WINDOW,
        }
    }
}

impl Frames {
    /// Bytes the client sent, in order.
    pub fn read(&mut self, bytes: &[u8]) {
        let Frames {
            read,
            streams,
            last,
            initial,
            connection,
            ..
        } = self;
        read.feed(bytes, |f| match f.kind {
            // A request opens a stream (a later HEADERS on it is trailers).
            HEADERS if f.stream % 2 == 1 && f.stream > *last => {
                *last = f.stream;
                streams.insert(
                    f.stream,
                    Stream {
                        window: *initial,
                        answering: false,
                        written: 0,
                        blocked: None,
                    },
                );
            }
            RST_STREAM => {
                streams.remove(&f.stream);
            }
            SETTINGS if f.stream == 0 && f.flags & ACK == 0 => {
                for entry in f.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([entry[0], entry[1]]);
                    let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                    if id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let delta = value as i64 - *initial;
                        *initial = value as i64;
                        for s in streams.values_mut() {
                            s.window += delta;
                        }
                    }
                }
            }
            WINDOW_UPDATE if f.payload.len() == 4 => {
                let p = f.payload;
                let more = (u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff) as i64;
                if f.stream == 0 {
                    *connection += more;
                } else if let Some(s) = streams.get_mut(&f.stream) {
                    s.window += more;
                }
            }
            _ => {}
        });
    }

    /// Bytes the server wrote, in order.
    pub fn written(&mut self, bytes: &[u8]) {
        let Frames {
            written,
            streams,
            connection,
            ..
        } = self;
        written.feed(bytes, |f| {
            let ends = f.flags & END_STREAM != 0;
            match f.kind {
                HEADERS if ends => {
                    streams.remove(&f.stream);
                }
                // A stream the client reset before these HEADERS went out
                // is not known any more, and stays so.
                HEADERS => {
                    if let Some(s) = streams.get_mut(&f.stream) {
                        s.answering = true;
                    }
                }
                DATA => {
                    *connection -= f.len as i64;
                    if ends {
                        streams.remove(&f.stream);
                    } else if let Some(s) = streams.get_mut(&f.stream) {
                        s.window -= f.len as i64;
                        s.written += f.len as u64;
                    }
                }
                RST_STREAM => {
                    streams.remove(&f.stream);
                }
                _ => {}
            }
        });
    }

    /// Whether a response has had no send window, and under
    /// [`MIN_PROGRESS`] of its DATA written, for `limit` (as seen at the
    /// calls, which should come several times within `limit`).
    pub fn stalled(&mut self, now: Instant, limit: Duration) -> bool {
        let connection_open = self.connection > 0;
        let mut stalled = false;
        for s in self.streams.values_mut().filter(|s| s.answering) {
            if connection_open && s.window > 0 {
                s.blocked = None;
                continue;
            }
            match s.blocked {
                Some((since, mark)) if s.written < mark + MIN_PROGRESS => {
                    stalled |= now.duration_since(since) >= limit;
                }
                _ => s.blocked = Some((now, s.written)),
            }
        }
        stalled
    }

    /// Streams open (for tests).
    #[cfg(test)]
    fn open(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.streams.keys().copied().collect();
        v.sort();
        v
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

    fn window_update(stream: u32, more: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &more.to_be_bytes())
    }

    /// The client: preface, SETTINGS (initial window 1,000), requests on
    /// 1, 3, 5 and 7, 500 more bytes of window for 5.
    fn client_bytes() -> Vec<u8> {
        let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = vec![0, 3, 0, 0, 0, 100];
        settings.extend([0, 4, 0, 0, 0x03, 0xe8]);
        r.extend(frame(SETTINGS, 0, 0, &settings));
        for s in [1, 3, 5, 7] {
            r.extend(frame(HEADERS, 0x4 | END_STREAM, s, b"request"));
        }
        r.extend(window_update(5, 500));
        r.extend(window_update(0, 1 << 20));
        r
    }

    /// The server: 1 ended by its last DATA, 3 by trailers, 5 and 7 left
    /// open (5 with 1,000 bytes of DATA); SETTINGS and PING between.
    fn server_bytes() -> Vec<u8> {
        let mut w = frame(SETTINGS, 0, 0, &[0; 6]);
        w.extend(frame(HEADERS, 0x4, 1, b"head"));
        w.extend(frame(DATA, 0, 1, &[7; 900]));
        w.extend(frame(HEADERS, 0x4, 3, b"head"));
        w.extend(frame(6, 0, 0, &[0; 8]));
        w.extend(frame(DATA, 0, 3, &[7; 1000]));
        w.extend(frame(DATA, END_STREAM, 1, &[]));
        w.extend(frame(HEADERS, 0x4 | END_STREAM, 3, b"trailers"));
        w.extend(frame(HEADERS, 0x4, 5, b"head"));
        w.extend(frame(DATA, 0, 5, &[1; 1000]));
        w.extend(frame(HEADERS, 0x4, 7, b"head"));
        w
    }

    #[test]
    fn follows_streams_and_windows_across_any_split() {
        let (r, w) = (client_bytes(), server_bytes());
        for split in [1, 2, 5, 9, 10, 333, r.len().max(w.len())] {
            let mut f = Frames::default();
            for piece in r.chunks(split) {
                f.read(piece);
            }
            for piece in w.chunks(split) {
                f.written(piece);
            }
            assert_eq!(f.open(), vec![5, 7], "split {split}");
            assert_eq!(f.initial, 1000);
            assert_eq!(f.streams[&5].window, 500, "split {split}");
            assert_eq!(f.streams[&5].written, 1000);
            assert_eq!(f.streams[&7].window, 1000);
            assert_eq!(f.connection, DEFAULT_WINDOW + (1 << 20) - 2900);
        }
    }

    #[test]
    fn a_reset_either_way_or_a_headers_only_response_leaves_nothing_open() {
        let mut f = Frames::default();
        f.read(&client_bytes());
        f.written(&server_bytes());
        // The client cancels 5; the server resets 7.
        f.read(&frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()));
        f.written(&frame(RST_STREAM, 0, 7, &2u32.to_be_bytes()));
        assert!(f.open().is_empty());
        // A 204 ends in its HEADERS.
        f.read(&frame(HEADERS, 0x4 | END_STREAM, 9, b"request"));
        f.written(&frame(HEADERS, 0x4 | END_STREAM, 9, b"204"));
        assert!(f.open().is_empty());
        // Cancelled before its response's HEADERS went out: not answered.
        f.read(&frame(HEADERS, 0x4 | END_STREAM, 11, b"request"));
        f.read(&frame(RST_STREAM, 0, 11, &8u32.to_be_bytes()));
        f.written(&frame(HEADERS, 0x4, 11, b"head"));
        assert!(f.open().is_empty());
    }

    #[test]
    fn only_a_response_without_window_that_gets_too_little_out_stalls() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = Frames::default();
        let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        r.extend(frame(HEADERS, 0x5, 1, b"request"));
        r.extend(window_update(0, 1 << 30));
        f.read(&r);
        f.written(&frame(HEADERS, 0x4, 1, b"head"));
        // Open with window, however quiet (the server has nothing yet).
        assert!(!f.stalled(at(0), limit));
        assert!(!f.stalled(at(100), limit));
        // Its window used up: blocked from here.
        f.written(&frame(DATA, 0, 1, &vec![0; 65_535]));
        assert!(!f.stalled(at(101), limit));
        // A trickle of window is not progress...
        for t in 102..131 {
            f.read(&window_update(1, 100));
            f.written(&frame(DATA, 0, 1, &[0; 100]));
            assert!(!f.stalled(at(t), limit), "{t}");
        }
        assert!(f.stalled(at(131), limit));
        // ...but 16 KiB is, and window given back ends the block.
        f.read(&window_update(1, 20_000));
        f.written(&frame(DATA, 0, 1, &vec![0; 20_000]));
        assert!(!f.stalled(at(132), limit));
        f.read(&window_update(1, 1));
        assert!(!f.stalled(at(200), limit));
        // The connection's window counts too.
        f.written(&frame(DATA, 0, 0, &[]));
        f.connection = 0;
        assert!(!f.stalled(at(201), limit));
        assert!(f.stalled(at(231), limit));
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
        frames.lock().unwrap().read(&client_bytes());
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
        let f = frames.lock().unwrap();
        assert_eq!(f.open(), vec![5, 7]);
        assert_eq!(f.streams[&5].written, 1000);
    }
}
