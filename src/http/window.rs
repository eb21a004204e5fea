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
//! on each. The connection is stalled, and closed as nginx's
//! `send_timeout` does, when for `http.send_timeout`
//! - a response's own stream has had no window to send, with under
//!   [`MIN_PROGRESS`] of its DATA written meanwhile, or
//! - the connection has had no window while it answers, with under
//!   [`MIN_PROGRESS`] of DATA written on it for each response it answers.
//!
//! A response that is quiet because the server has nothing to send yet (a
//! slow store, a sparse track) still has window and is not stalled. A
//! stream ends at the server's END_STREAM or a RST_STREAM either way; what
//! h2 drops at a reset is not owed. Streams above the last one a GOAWAY
//! names are never answered, and are not kept.
//!
//! Nothing here allocates on the peer's word: frames are cut by their
//! headers, the few payload fields read (SETTINGS entries, WINDOW_UPDATE
//! and GOAWAY's stream) are gathered in a fixed buffer, and the streams
//! kept are at most [`STREAMS_MAX`].

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

/// Streams followed at once, at most: h2 refuses (and resets) those over
/// its concurrency limit, so this is only a backstop.
pub const STREAMS_MAX: usize = 2 * super::H2_MAX_STREAMS as usize;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// RFC 9113's initial windows.
const DEFAULT_WINDOW: i64 = 65_535;
/// What a client sends before its first frame.
const PREFACE_LEN: usize = 24;

/// A frame's header.
#[derive(Debug, Clone, Copy)]
struct Head {
    kind: u8,
    flags: u8,
    stream: u32,
    len: u32,
}

/// What a [`Splitter`] sees: each frame at its header, then each unit of
/// its payload that is read (see [`Units`]).
enum Event<'a> {
    Head(Head),
    Unit(Head, &'a [u8]),
}

/// Which part of a frame's payload is read: units of `size` bytes (at
/// most 8), every one or only the first.
#[derive(Debug, Clone, Copy, Default)]
struct Units {
    size: usize,
    every: bool,
}

/// Frames cut out of a byte stream fed in any pieces.
#[derive(Debug)]
struct Splitter {
    /// Bytes still to skip before the first frame (the client's preface).
    skip: usize,
    header: [u8; 9],
    have: usize,
    /// Payload bytes left in the current frame.
    left: u32,
    /// What of the current frame's payload is read, and the unit so far.
    units: Units,
    unit: [u8; 8],
    got: usize,
    /// Which units a frame has.
    read: fn(&Head) -> Units,
}

impl Splitter {
    fn new(skip: usize, read: fn(&Head) -> Units) -> Self {
        Splitter {
            skip,
            header: [0; 9],
            have: 0,
            left: 0,
            units: Units::default(),
            unit: [0; 8],
            got: 0,
            read,
        }
    }

    fn head(&self) -> Head {
        let h = &self.header;
        Head {
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
        }
    }

    /// Feeds bytes; `on` sees each frame and unit as it completes.
    fn feed(&mut self, mut bytes: &[u8], mut on: impl FnMut(Event<'_>)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let take = self.skip.min(bytes.len());
                self.skip -= take;
                bytes = &bytes[take..];
            } else if self.left > 0 {
                let mut take = (self.left as usize).min(bytes.len());
                if self.units.size > 0 {
                    take = take.min(self.units.size - self.got);
                    self.unit[self.got..self.got + take].copy_from_slice(&bytes[..take]);
                    self.got += take;
                    if self.got == self.units.size {
                        on(Event::Unit(self.head(), &self.unit[..self.got]));
                        self.got = 0;
                        if !self.units.every {
                            self.units.size = 0;
                        }
                    }
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
                    let head = self.head();
                    self.left = head.len;
                    self.units = (self.read)(&head);
                    self.got = 0;
                    on(Event::Head(head));
                }
            }
        }
    }
}

/// What of the client's frames is read: SETTINGS entries and
/// WINDOW_UPDATE's increment.
fn client_units(h: &Head) -> Units {
    match h.kind {
        SETTINGS if h.stream == 0 && h.flags & ACK == 0 => Units {
            size: 6,
            every: true,
        },
        WINDOW_UPDATE if h.len == 4 => Units {
            size: 4,
            every: false,
        },
        _ => Units::default(),
    }
}

/// What of the server's frames is read: GOAWAY's last stream.
fn server_units(h: &Head) -> Units {
    match h.kind {
        GOAWAY if h.stream == 0 && h.len >= 8 => Units {
            size: 4,
            every: false,
        },
        _ => Units::default(),
    }
}

fn u31(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff
}

/// Since when a send window has been used up, and the DATA written
/// then.
#[derive(Debug, Default)]
struct Block(Option<(Instant, u64)>);

impl Block {
    /// Judges a window now: `used_up` whether it has none left, or enough
    /// left that h2, which sends at once what a window allows, would have
    /// used it had the server anything to send (`None`: neither), with
    /// `written` the DATA written so far and `need` the progress that ends
    /// a block. True once it has been blocked for `limit` with under
    /// `need` written since. A block starts when the window is used up,
    /// and ends with `need` written or enough window left.
    fn stalled(
        &mut self,
        used_up: Option<bool>,
        written: u64,
        need: u64,
        now: Instant,
        limit: Duration,
    ) -> bool {
        if let Some((since, mark)) = self.0
            && written < mark.saturating_add(need)
            && used_up != Some(false)
        {
            return now.duration_since(since) >= limit;
        }
        self.0 = (used_up == Some(true)).then_some((now, written));
        false
    }
}

/// A stream the client opened.
#[derive(Debug, Default)]
struct Stream {
    /// Its send window less the client's SETTINGS_INITIAL_WINDOW_SIZE:
    /// the WINDOW_UPDATEs on it less the DATA written, so that a new
    /// setting moves every stream's window at once.
    granted: i64,
    /// The server has sent its response's HEADERS (not ending it).
    answering: bool,
    /// DATA written on it.
    written: u64,
    blocked: Block,
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
    /// The last stream the server's GOAWAY will answer.
    goaway: u32,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE.
    initial: i64,
    /// The connection's send window.
    connection: i64,
    /// DATA written on the connection.
    total: u64,
    blocked: Block,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            read: Splitter::new(PREFACE_LEN, client_units),
            written: Splitter::new(0, server_units),
            streams: HashMap::new(),
            last: 0,
            goaway: u32::MAX,
            initial: DEFAULT_WINDOW,
            connection: DEFAULT_WINDOW,
            total: 0,
            blocked: Block::default(),
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
            goaway,
            initial,
            connection,
            ..
        } = self;
        read.feed(bytes, |e| match e {
            // A request opens a stream (a later HEADERS on it is trailers).
            Event::Head(h) if h.kind == HEADERS && h.stream % 2 == 1 && h.stream > *last => {
                *last = h.stream;
                if h.stream <= *goaway && streams.len() < STREAMS_MAX {
                    streams.insert(h.stream, Stream::default());
                }
            }
            Event::Head(h) if h.kind == RST_STREAM => {
                streams.remove(&h.stream);
            }
            Event::Unit(h, entry)
                if h.kind == SETTINGS
                    && u16::from_be_bytes([entry[0], entry[1]]) == SETTINGS_INITIAL_WINDOW_SIZE =>
            {
                *initial = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]) as i64;
            }
            Event::Unit(h, more) if h.kind == WINDOW_UPDATE => {
                let more = u31(more) as i64;
                // (h2 ends a connection whose window passes 2^31 - 1.)
                if h.stream == 0 {
                    *connection = connection.saturating_add(more);
                } else if let Some(s) = streams.get_mut(&h.stream) {
                    s.granted = s.granted.saturating_add(more);
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
            goaway,
            connection,
            total,
            ..
        } = self;
        written.feed(bytes, |e| match e {
            Event::Head(h) => {
                let ends = h.flags & END_STREAM != 0;
                match h.kind {
                    HEADERS if ends => {
                        streams.remove(&h.stream);
                    }
                    // A stream the client reset before these HEADERS went
                    // out is not known any more, and stays so.
                    HEADERS => {
                        if let Some(s) = streams.get_mut(&h.stream) {
                            s.answering = true;
                        }
                    }
                    DATA => {
                        *connection -= h.len as i64;
                        *total += h.len as u64;
                        if ends {
                            streams.remove(&h.stream);
                        } else if let Some(s) = streams.get_mut(&h.stream) {
                            s.granted -= h.len as i64;
                            s.written += h.len as u64;
                        }
                    }
                    RST_STREAM => {
                        streams.remove(&h.stream);
                    }
                    _ => {}
                }
            }
            // h2's graceful GOAWAY names every stream first, then the last
            // one it took: those above are never answered.
            Event::Unit(h, last) if h.kind == GOAWAY => {
                *goaway = (*goaway).min(u31(last));
                let goaway = *goaway;
                streams.retain(|id, _| *id <= goaway);
            }
            Event::Unit(..) => {}
        });
    }

    /// Whether a response's stream, or the connection while it answers,
    /// has had no send window, with too little DATA written on it (see
    /// the module's rules), for `limit` (as seen at the calls, which
    /// should come several times within `limit`).
    pub fn stalled(&mut self, now: Instant, limit: Duration) -> bool {
        let (initial, connection) = (self.initial, self.connection);
        // Window enough to end a block: a little window left may be one
        // h2 has read and not yet used (the tick fell between the two).
        let enough = (MIN_PROGRESS as i64).min(initial / 2).max(1);
        let mut answering = 0;
        let mut stalled = false;
        for s in self.streams.values_mut().filter(|s| s.answering) {
            answering += 1;
            // With window of its own on a connection that has none, a
            // stream may or may not have data waiting: the connection's
            // rule judges it.
            let window = initial + s.granted;
            let used_up = if window <= 0 {
                Some(true)
            } else if window >= enough && connection > 0 {
                Some(false)
            } else {
                None
            };
            stalled |= s
                .blocked
                .stalled(used_up, s.written, MIN_PROGRESS, now, limit);
        }
        // A connection with no window must move as much as each response
        // it answers would on its own: else granting a trickle of window
        // to the connection would pin every response on it at once.
        if answering > 0 {
            let used_up = if connection <= 0 {
                Some(true)
            } else if connection >= MIN_PROGRESS as i64 {
                Some(false)
            } else {
                None
            };
            stalled |=
                self.blocked
                    .stalled(used_up, self.total, MIN_PROGRESS * answering, now, limit);
        } else {
            self.blocked = Block::default();
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

    /// A stream's send window (for tests).
    #[cfg(test)]
    fn window(&self, stream: u32) -> i64 {
        self.initial + self.streams[&stream].granted
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

    /// A client's first bytes: the preface, a SETTINGS frame with
    /// `settings` if any, and a request (ending its side) on each stream.
    fn opening(settings: &[u8], streams: impl IntoIterator<Item = u32>) -> Vec<u8> {
        let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        if !settings.is_empty() {
            r.extend(frame(SETTINGS, 0, 0, settings));
        }
        for s in streams {
            r.extend(frame(HEADERS, 0x5, s, b"request"));
        }
        r
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
            assert_eq!(f.window(5), 500, "split {split}");
            assert_eq!(f.streams[&5].written, 1000);
            assert_eq!(f.window(7), 1000);
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
        let mut r = opening(&[], [1]);
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
        // ...but 16 KiB is (and, used up again, starts a new block)...
        f.read(&window_update(1, 20_000));
        f.written(&frame(DATA, 0, 1, &vec![0; 20_000]));
        assert!(!f.stalled(at(132), limit));
        assert!(f.stalled(at(162), limit));
        // ...a little window seen at a call (read by h2, not yet used)
        // does not end it...
        f.read(&window_update(1, 100));
        assert!(f.stalled(at(163), limit));
        // ...but window that h2 would have used, had it data, does.
        f.read(&window_update(1, 16 << 10));
        assert!(!f.stalled(at(164), limit));
        assert!(!f.stalled(at(200), limit));
        // The connection's window counts too.
        f.written(&frame(DATA, 0, 0, &[]));
        f.connection = 0;
        assert!(!f.stalled(at(201), limit));
        assert!(f.stalled(at(231), limit));
    }

    #[test]
    fn a_quiet_response_is_not_blamed_for_the_connection_window() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = Frames::default();
        let mut r = opening(&[], [1, 3]);
        r.extend(window_update(1, 1 << 30));
        f.read(&r);
        f.written(&frame(HEADERS, 0x4, 1, b"head"));
        f.written(&frame(HEADERS, 0x4, 3, b"head"));
        // 1 uses up the connection's window at every tick and gets it back
        // as it is read; 3, with its own window, has nothing to send. The
        // pair moves 60 KB in 30 s, over the 32 KiB two responses need.
        f.written(&frame(DATA, 0, 1, &vec![0; 65_535]));
        for t in 0..100 {
            assert!(!f.stalled(at(t), limit), "{t}");
            f.read(&window_update(0, 2000));
            f.written(&frame(DATA, 0, 1, &[0; 2000]));
        }
        // The client stops reading: the connection is stalled.
        assert!(!f.stalled(at(100), limit));
        assert!(f.stalled(at(130), limit));
        // With nothing answered, a closed connection window is no stall.
        f.written(&frame(DATA, END_STREAM, 1, &[]));
        f.written(&frame(HEADERS, 0x5, 3, b"trailers"));
        assert!(!f.stalled(at(131), limit));
        assert!(!f.stalled(at(200), limit));
    }

    #[test]
    fn a_trickle_of_connection_window_does_not_keep_many_responses() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let at = |s| t0 + Duration::from_secs(s);
        let mut f = Frames::default();
        // Every stream's own window as large as can be; 256 responses.
        f.read(&opening(
            &[0, 4, 0x7f, 0xff, 0xff, 0xff],
            (0..256).map(|s| 2 * s + 1),
        ));
        for s in 0..256 {
            f.written(&frame(HEADERS, 0x4, 2 * s + 1, b"head"));
        }
        f.written(&frame(DATA, 0, 1, &vec![0; 65_535]));
        // 20 KiB of connection window in 30 s (4 KiB a tick) would do for
        // one response, not for 256.
        // (Seen at a tick between h2 reading a grant and using it too.)
        for t in (0..30).step_by(7) {
            assert!(!f.stalled(at(t), limit), "{t}");
            f.read(&window_update(0, 4096));
            assert!(!f.stalled(at(t + 1), limit), "{t}");
            f.written(&frame(DATA, 0, 3, &[0; 4096]));
        }
        assert!(f.stalled(at(30), limit));
    }

    #[test]
    fn a_request_not_yet_answered_is_not_blocked_by_its_window() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let mut f = Frames::default();
        // Initial window 0: the client opens each stream's window later.
        f.read(&opening(&[0, 4, 0, 0, 0, 0], [1]));
        assert_eq!(f.window(1), 0);
        // A blocking playlist reload, say, held for a minute.
        assert!(!f.stalled(t0, limit));
        assert!(!f.stalled(t0 + Duration::from_secs(60), limit));
        // Answered: from here its window counts.
        f.written(&frame(HEADERS, 0x4, 1, b"head"));
        assert!(!f.stalled(t0 + Duration::from_secs(61), limit));
        assert!(f.stalled(t0 + Duration::from_secs(91), limit));
    }

    #[test]
    fn settings_of_any_length_are_read_without_keeping_them() {
        // 300 entries (1,800 bytes), the initial window last.
        let mut settings = Vec::new();
        for _ in 0..299 {
            settings.extend([0, 3, 0, 0, 0, 100]);
        }
        settings.extend([0, 4, 0, 0, 0, 0]);
        let mut r = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        r.extend(frame(SETTINGS, 0, 0, &settings));
        r.extend(frame(HEADERS, 0x5, 1, b"request"));
        // Its ACK, and a WINDOW_UPDATE of the wrong length, read as nothing.
        r.extend(frame(SETTINGS, ACK, 0, &[0, 4, 0, 0, 0, 9]));
        r.extend(frame(WINDOW_UPDATE, 0, 1, &[0, 0, 0, 9, 0]));
        for split in [1, 5, 7, 1000, r.len()] {
            let mut f = Frames::default();
            for piece in r.chunks(split) {
                f.read(piece);
            }
            assert_eq!(f.initial, 0, "split {split}");
            assert_eq!(f.window(1), 0, "split {split}");
            // A later setting moves the open stream's window.
            f.read(&frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0x03, 0xe8]));
            f.read(&window_update(1, 24));
            assert_eq!(f.window(1), 1024, "split {split}");
        }
    }

    #[test]
    fn streams_past_a_goaway_or_the_cap_are_not_kept() {
        let mut f = Frames::default();
        f.read(&opening(&[], [1, 3, 5]));
        // h2's graceful shutdown: every stream, then the last taken (3).
        let goaway = |last: u32| {
            let mut p = last.to_be_bytes().to_vec();
            p.extend(0u32.to_be_bytes());
            frame(GOAWAY, 0, 0, &p)
        };
        f.written(&goaway(0x7fff_ffff));
        assert_eq!(f.open(), vec![1, 3, 5]);
        for piece in goaway(3).chunks(2) {
            f.written(piece);
        }
        assert_eq!(f.open(), vec![1, 3]);
        f.read(&frame(HEADERS, 0x5, 7, b"request"));
        assert_eq!(f.open(), vec![1, 3]);

        let mut f = Frames::default();
        f.read(&opening(
            &[],
            (0..STREAMS_MAX as u32 + 10).map(|s| 2 * s + 1),
        ));
        assert_eq!(f.open().len(), STREAMS_MAX);
    }

    #[test]
    fn any_bytes_either_way_are_taken_within_bounds() {
        // xorshift: the same bytes every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let t0 = Instant::now();
        for round in 0..200 {
            let mut f = Frames::default();
            for _ in 0..50 {
                // Frame-shaped pieces (small lengths, the types read) and
                // plain noise.
                let kind = [DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, WINDOW_UPDATE]
                    [next() as usize % 6];
                let len = (next() % 40) as usize;
                let mut bytes = frame(
                    kind,
                    next() as u8,
                    (next() % 1024) as u32,
                    &vec![next() as u8; len],
                );
                if round % 4 == 0 {
                    bytes = (0..len * 3).map(|_| next() as u8).collect();
                }
                if next() % 2 == 0 {
                    f.read(&bytes);
                } else {
                    f.written(&bytes);
                }
                // (This looks for panics and overflows; the cap has its
                // own test.)
                f.stalled(
                    t0 + Duration::from_secs(next() % 100),
                    Duration::from_secs(30),
                );
            }
        }
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
