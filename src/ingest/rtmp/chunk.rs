//! The RTMP chunk stream (RTMP 1.0 §5.3): bytes in, whole messages out, and
//! whole messages to chunks for what we send.
//!
//! Sans-IO and bounded. The peer's word decides nothing about memory: a
//! message's declared length is checked against a per-type limit before a
//! byte of it is kept, its buffer grows only with bytes that arrived, the
//! bytes held in unfinished messages across chunk streams are capped, and so
//! is the number of chunk streams. Partial headers are the only input kept
//! between calls (at most [`MAX_HEADER`] bytes).
//!
//! The chunk-layer control messages (Set Chunk Size, Abort) are applied here,
//! in order, so that the chunks after them are read with the new size.
//!
//! Timestamps follow what ffmpeg and librtmp (OBS) write and read:
//! - a type-3 chunk that starts a message adds the chunk stream's last
//!   timestamp field (the delta of a type 1/2 header, or a type 0's absolute
//!   value) to the previous message's timestamp;
//! - the 4-byte extended timestamp follows every chunk header, type 3
//!   included, while the chunk stream's last timestamp field was 0xFFFFFF.
//!
//! RTMP timestamps are 32-bit milliseconds that wrap by definition (RTMP 1.0
//! §5.3.1.2.1), so they are added modulo 2^32; every length is checked.

use bytes::Bytes;

/// Longest chunk header: 3-byte basic header, 11-byte type-0 message header,
/// 4-byte extended timestamp.
pub const MAX_HEADER: usize = 3 + 11 + 4;
/// RTMP's default chunk size, until the peer sets another.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size RTMP allows (31 bits).
pub const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;

const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;

/// What one connection may make the reader hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest audio, video or aggregate message (a 4K keyframe is a few
    /// MB).
    pub max_media_message: u32,
    /// Largest message of any other type: commands, metadata and control
    /// messages are small, and the AMF decoder only ever sees this much.
    pub max_control_message: u32,
    /// Bytes held in unfinished messages, all chunk streams together.
    pub max_buffered: usize,
    /// Chunk streams a connection may use (a publisher uses 3 to 6).
    pub max_chunk_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_media_message: 8 << 20,
            max_control_message: 64 << 10,
            max_buffered: 32 << 20,
            max_chunk_streams: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk stream {csid} continues (header type {fmt}) before any full header")]
    NoPreviousHeader { csid: u32, fmt: u8 },
    #[error(
        "a new message header (type {fmt}) on chunk stream {csid} interrupts a message with {missing} bytes missing"
    )]
    MessageInterrupted { csid: u32, fmt: u8, missing: u32 },
    #[error("message type {type_id} of {length} bytes is over the {limit}-byte limit")]
    MessageTooLarge {
        type_id: u8,
        length: u32,
        limit: u32,
    },
    #[error("unfinished messages would hold more than {limit} bytes")]
    TooMuchBuffered { limit: usize },
    #[error("more than {limit} chunk streams in use")]
    TooManyChunkStreams { limit: usize },
    #[error("set chunk size to {0}: must be 1 to 2^31-1")]
    BadChunkSize(u32),
    #[error("control message type {type_id} is {length} bytes, expected {expected}")]
    BadControlMessage {
        type_id: u8,
        length: usize,
        expected: usize,
    },
}

/// A whole message, reassembled from its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    /// Milliseconds, modulo 2^32.
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    /// The last timestamp field (absolute for type 0, else a delta), after
    /// any extended timestamp.
    ts_field: u32,
    /// Whether that field was sent as an extended timestamp.
    extended: bool,
    /// The current (or last) message's absolute timestamp.
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The message being reassembled, if one is.
    partial: Option<Vec<u8>>,
}

/// Reassembles messages from a peer's chunk stream.
#[derive(Debug)]
pub struct ChunkReader {
    limits: Limits,
    chunk_size: u32,
    streams: Vec<ChunkStream>,
    /// Input that did not complete a chunk header yet.
    pending: Vec<u8>,
    /// The chunk whose body is being read: (index into `streams`, bytes of
    /// body left in this chunk).
    body: Option<(usize, u32)>,
    /// The declared lengths of the unfinished messages: what their buffers
    /// may grow to.
    buffered: usize,
}

enum Header {
    /// Not enough input yet.
    Incomplete,
    /// A header of `len` bytes: the chunk stream's index, and whether the
    /// chunk starts a new message.
    Parsed { len: usize, index: usize },
}

impl ChunkReader {
    pub fn new(limits: Limits) -> ChunkReader {
        ChunkReader {
            limits,
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            pending: Vec::with_capacity(MAX_HEADER),
            body: None,
            buffered: 0,
        }
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Reads `input`, appending each message it completes to `out`. Set
    /// Chunk Size and Abort are applied here and not returned. After an
    /// error the reader must not be used again.
    pub fn read(&mut self, mut input: &[u8], out: &mut Vec<Message>) -> Result<(), ChunkError> {
        while !input.is_empty() {
            if let Some((index, left)) = self.body {
                let take = input.len().min(left as usize);
                let stream = &mut self.streams[index];
                let partial = stream
                    .partial
                    .as_mut()
                    .expect("a body belongs to a message");
                partial.extend_from_slice(&input[..take]);
                input = &input[take..];
                // `take` ≤ `left`, which is a u32.
                let left = left - take as u32;
                if left > 0 {
                    self.body = Some((index, left));
                    continue;
                }
                self.body = None;
                if partial.len() == stream.length as usize {
                    let payload = stream.partial.take().expect("checked above");
                    self.buffered -= payload.len();
                    debug_assert_eq!(payload.len(), stream.length as usize);
                    let message = Message {
                        csid: stream.csid,
                        timestamp: stream.timestamp,
                        type_id: stream.type_id,
                        stream_id: stream.stream_id,
                        payload: Bytes::from(payload),
                    };
                    self.deliver(message, out)?;
                }
                continue;
            }
            // A header: from the pending bytes plus as much input as it
            // needs (never more than MAX_HEADER bytes copied).
            let had = self.pending.len();
            let add = input.len().min(MAX_HEADER - had);
            self.pending.extend_from_slice(&input[..add]);
            let header = std::mem::take(&mut self.pending);
            let parsed = self.header(&header);
            match parsed {
                Ok(Header::Incomplete) => {
                    debug_assert!(header.len() < MAX_HEADER);
                    self.pending = header;
                    input = &input[add..];
                }
                Ok(Header::Parsed { len, index }) => {
                    self.pending = header;
                    self.pending.clear();
                    // The header took `len - had` bytes of this input.
                    input = &input[len - had..];
                    self.start_body(index, out)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Parses a chunk header at the start of `h`, updating the chunk
    /// stream's state only when the header is complete.
    fn header(&mut self, h: &[u8]) -> Result<Header, ChunkError> {
        let Some(&first) = h.first() else {
            return Ok(Header::Incomplete);
        };
        let fmt = first >> 6;
        let (csid, mut pos) = match first & 0x3f {
            0 => match h.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(Header::Incomplete),
            },
            1 => match (h.get(1), h.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + u32::from(b1) + 256 * u32::from(b2), 3),
                _ => return Ok(Header::Incomplete),
            },
            n => (u32::from(n), 1),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        if h.len() < pos + header_len {
            return Ok(Header::Incomplete);
        }
        let found = self.streams.iter().position(|s| s.csid == csid);
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let mh = &h[pos..pos + header_len];
        pos += header_len;
        // The timestamp field as sent, and whether an extended one follows.
        let ts_field = match fmt {
            0..=2 => Some(u24(&mh[0..3])),
            _ => None,
        };
        let extended = match (ts_field, found) {
            (Some(t), _) => t == 0xff_ffff,
            (None, Some(i)) => self.streams[i].extended,
            (None, None) => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
        };
        let ext = if extended {
            match h.get(pos..pos + 4) {
                Some(b) => {
                    pos += 4;
                    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                }
                None => return Ok(Header::Incomplete),
            }
        } else {
            None
        };

        // Complete: apply it.
        let index = match found {
            Some(i) => i,
            None if fmt != 0 => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(ChunkError::TooManyChunkStreams {
                        limit: self.limits.max_chunk_streams,
                    });
                }
                self.streams.push(ChunkStream {
                    csid,
                    ts_field: 0,
                    extended: false,
                    timestamp: 0,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    partial: None,
                });
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index];
        if let Some(partial) = &stream.partial {
            if fmt != 3 {
                // `partial` is shorter than `length`, which is a u32.
                let missing = stream.length - partial.len() as u32;
                return Err(ChunkError::MessageInterrupted { csid, fmt, missing });
            }
            // A continuation: its extended timestamp (if any) repeats the
            // message's and changes nothing.
            return Ok(Header::Parsed { len: pos, index });
        }
        if let Some(t) = ts_field {
            stream.ts_field = ext.unwrap_or(t);
            stream.extended = extended;
        } else if let Some(e) = ext {
            // A type-3 header starting a message repeats the extended
            // field; take what it says.
            stream.ts_field = e;
        }
        if fmt <= 1 {
            let length = u24(&mh[3..6]);
            let type_id = mh[6];
            let limit = if matches!(type_id, 8 | 9 | 22) {
                self.limits.max_media_message
            } else {
                self.limits.max_control_message
            };
            if length > limit {
                return Err(ChunkError::MessageTooLarge {
                    type_id,
                    length,
                    limit,
                });
            }
            stream.length = length;
            stream.type_id = type_id;
        }
        if fmt == 0 {
            stream.stream_id = u32::from_le_bytes([mh[7], mh[8], mh[9], mh[10]]);
            stream.timestamp = stream.ts_field;
        } else {
            stream.timestamp = stream.timestamp.wrapping_add(stream.ts_field);
        }
        Ok(Header::Parsed { len: pos, index })
    }

    /// After a header: a new message starts (or continues) on `index`.
    fn start_body(&mut self, index: usize, out: &mut Vec<Message>) -> Result<(), ChunkError> {
        let chunk_size = self.chunk_size;
        let stream = &mut self.streams[index];
        let received = match &stream.partial {
            Some(p) => p.len() as u32,
            None => {
                if stream.length == 0 {
                    let message = Message {
                        csid: stream.csid,
                        timestamp: stream.timestamp,
                        type_id: stream.type_id,
                        stream_id: stream.stream_id,
                        payload: Bytes::new(),
                    };
                    return self.deliver(message, out);
                }
                0
            }
        };
        let left = (stream.length - received).min(chunk_size);
        if stream.partial.is_none() {
            let committed = self.buffered + stream.length as usize;
            if committed > self.limits.max_buffered {
                return Err(ChunkError::TooMuchBuffered {
                    limit: self.limits.max_buffered,
                });
            }
            self.buffered = committed;
            // Room for what this chunk brings, not for what the header
            // claims.
            stream.partial = Some(Vec::with_capacity(left as usize));
        }
        self.body = Some((index, left));
        Ok(())
    }

    /// Applies chunk-layer control messages; passes the rest on.
    fn deliver(&mut self, message: Message, out: &mut Vec<Message>) -> Result<(), ChunkError> {
        match message.type_id {
            SET_CHUNK_SIZE => {
                let size = u32_payload(&message)?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.chunk_size = size;
            }
            ABORT => {
                let csid = u32_payload(&message)?;
                if let Some(s) = self.streams.iter_mut().find(|s| s.csid == csid)
                    && s.partial.take().is_some()
                {
                    self.buffered -= s.length as usize;
                }
            }
            _ => out.push(message),
        }
        Ok(())
    }
}

fn u32_payload(m: &Message) -> Result<u32, ChunkError> {
    match *m.payload {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(ChunkError::BadControlMessage {
            type_id: m.type_id,
            length: m.payload.len(),
            expected: 4,
        }),
    }
}

/// Writes our messages as chunks: a type-0 header, then type-3 headers for
/// the rest of the message.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: u32,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        ChunkWriter {
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl ChunkWriter {
    /// Appends Set Chunk Size to `out`; what follows uses the new size.
    pub fn set_chunk_size(&mut self, size: u32, out: &mut Vec<u8>) {
        debug_assert!((1..=MAX_CHUNK_SIZE).contains(&size));
        self.write(2, 0, SET_CHUNK_SIZE, 0, &size.to_be_bytes(), out);
        self.chunk_size = size;
    }

    /// Appends one message. Our messages are small and ours: `payload` is
    /// under 2^24 bytes and `timestamp` under 2^24 ms (no extended field).
    pub fn write(
        &self,
        csid: u8,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        debug_assert!((2..64).contains(&csid));
        debug_assert!(payload.len() < 1 << 24 && timestamp < 0xff_ffff);
        out.push(csid);
        out.extend_from_slice(&timestamp.to_be_bytes()[1..]);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&stream_id.to_le_bytes());
        let mut chunks = payload.chunks(self.chunk_size as usize);
        if let Some(first) = chunks.next() {
            out.extend_from_slice(first);
        }
        for rest in chunks {
            out.push(0xc0 | csid);
            out.extend_from_slice(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> ChunkReader {
        ChunkReader::new(Limits::default())
    }

    fn read_all(r: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
        let mut out = Vec::new();
        r.read(bytes, &mut out)?;
        Ok(out)
    }

    /// A type-0 header on `csid` (< 64).
    fn type0(csid: u8, ts: u32, len: u32, type_id: u8, sid: u32) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.min(0xff_ffff).to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&sid.to_le_bytes());
        if ts >= 0xff_ffff {
            v.extend_from_slice(&ts.to_be_bytes());
        }
        v
    }

    #[test]
    fn writer_output_reads_back_byte_by_byte_and_whole() {
        let mut w = ChunkWriter::default();
        let mut bytes = Vec::new();
        w.set_chunk_size(100, &mut bytes);
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        w.write(6, 40, 9, 1, &big, &mut bytes);
        w.write(4, 41, 8, 1, b"audio", &mut bytes);
        w.write(3, 0, 20, 0, b"", &mut bytes);
        let whole = read_all(&mut reader(), &bytes).unwrap();
        let mut r = reader();
        let mut one_by_one = Vec::new();
        for b in &bytes {
            r.read(std::slice::from_ref(b), &mut one_by_one).unwrap();
        }
        assert_eq!(whole, one_by_one);
        assert_eq!(whole.len(), 3);
        assert_eq!(&whole[0].payload[..], &big[..]);
        assert_eq!((whole[0].timestamp, whole[0].type_id), (40, 9));
        assert_eq!((whole[1].csid, whole[1].timestamp), (4, 41));
        assert!(whole[2].payload.is_empty());
        assert_eq!(r.chunk_size(), 100);
    }

    #[test]
    fn delta_headers_and_type3_new_messages_follow_ffmpeg() {
        let mut bytes = type0(4, 1000, 2, 8, 1);
        bytes.extend_from_slice(b"a0");
        // Type 2: delta 20.
        bytes.extend_from_slice(&[0x80 | 4, 0, 0, 20]);
        bytes.extend_from_slice(b"a1");
        // Type 3: the same delta again.
        bytes.push(0xc0 | 4);
        bytes.extend_from_slice(b"a2");
        // Type 1: delta 5, new length and type.
        bytes.extend_from_slice(&[0x40 | 4, 0, 0, 5, 0, 0, 3, 9]);
        bytes.extend_from_slice(b"vid");
        let m = read_all(&mut reader(), &bytes).unwrap();
        let ts: Vec<u32> = m.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, [1000, 1020, 1040, 1045]);
        assert_eq!((m[3].type_id, m[3].stream_id), (9, 1));
        // After a type 0, a type-3 message adds the type 0's field (what
        // ffmpeg's writer means by it).
        let mut bytes = type0(5, 40, 1, 9, 1);
        bytes.push(b'x');
        bytes.push(0xc0 | 5);
        bytes.push(b'y');
        let m = read_all(&mut reader(), &bytes).unwrap();
        assert_eq!(m[1].timestamp, 80);
    }

    #[test]
    fn extended_timestamps_repeat_on_type3_chunks() {
        // 5 hours in: past 0xFFFFFF ms. 200 bytes in 128-byte chunks.
        let ts = 18_000_000;
        let mut bytes = type0(6, ts, 200, 9, 1);
        bytes.extend_from_slice(&[7u8; 128]);
        bytes.push(0xc0 | 6);
        bytes.extend_from_slice(&ts.to_be_bytes());
        bytes.extend_from_slice(&[7u8; 72]);
        let mut r = reader();
        let m = read_all(&mut r, &bytes).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].timestamp, ts);
        assert_eq!(m[0].payload.len(), 200);
        assert!(m[0].payload.iter().all(|&b| b == 7));
    }

    #[test]
    fn two_and_three_byte_chunk_stream_ids() {
        let mut bytes = vec![0, 10]; // csid 74
        bytes.extend_from_slice(&type0(0, 1, 1, 9, 1)[1..]);
        bytes.push(1);
        bytes.extend_from_slice(&[1, 0x10, 0x02]); // csid 64 + 0x10 + 2*256
        bytes.extend_from_slice(&type0(0, 2, 1, 9, 1)[1..]);
        bytes.push(2);
        let m = read_all(&mut reader(), &bytes).unwrap();
        assert_eq!(m[0].csid, 74);
        assert_eq!(m[1].csid, 64 + 0x10 + 512);
    }

    #[test]
    fn each_error() {
        // A continuation on a chunk stream never introduced.
        assert_eq!(
            read_all(&mut reader(), &[0xc0 | 7, 1]),
            Err(ChunkError::NoPreviousHeader { csid: 7, fmt: 3 })
        );
        assert_eq!(
            read_all(&mut reader(), &[0x80 | 7, 0, 0, 1]),
            Err(ChunkError::NoPreviousHeader { csid: 7, fmt: 2 })
        );
        // A new header in the middle of a message.
        let mut bytes = type0(4, 0, 300, 9, 1);
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(&type0(4, 0, 10, 9, 1));
        assert_eq!(
            read_all(&mut reader(), &bytes),
            Err(ChunkError::MessageInterrupted {
                csid: 4,
                fmt: 0,
                missing: 172
            })
        );
        // Too large: a command over 64 KiB, media over 8 MiB.
        assert!(matches!(
            read_all(&mut reader(), &type0(3, 0, 70_000, 20, 0)),
            Err(ChunkError::MessageTooLarge { type_id: 20, .. })
        ));
        assert!(matches!(
            read_all(&mut reader(), &type0(3, 0, 0xff_fffe, 9, 1)),
            Err(ChunkError::MessageTooLarge { type_id: 9, .. })
        ));
        // Chunk sizes.
        for bad in [0u32, 0x8000_0000, u32::MAX] {
            let mut bytes = type0(2, 0, 4, 1, 0);
            bytes.extend_from_slice(&bad.to_be_bytes());
            assert_eq!(
                read_all(&mut reader(), &bytes),
                Err(ChunkError::BadChunkSize(bad))
            );
        }
        let mut bytes = type0(2, 0, 3, 1, 0);
        bytes.extend_from_slice(&[0, 0, 1]);
        assert!(matches!(
            read_all(&mut reader(), &bytes),
            Err(ChunkError::BadControlMessage { type_id: 1, .. })
        ));
        // Too many chunk streams.
        let mut bytes = Vec::new();
        for csid in 2..64u8 {
            bytes.extend_from_slice(&type0(csid, 0, 1, 9, 1));
            bytes.push(0);
        }
        for csid in 64..70u32 {
            bytes.extend_from_slice(&[0, (csid - 64) as u8]);
            bytes.extend_from_slice(&type0(0, 0, 1, 9, 1)[1..]);
            bytes.push(0);
        }
        assert_eq!(
            read_all(&mut reader(), &bytes),
            Err(ChunkError::TooManyChunkStreams { limit: 64 })
        );
    }

    #[test]
    fn unfinished_messages_are_capped_together() {
        let limits = Limits {
            max_buffered: 1000,
            ..Limits::default()
        };
        let mut r = ChunkReader::new(limits);
        let mut bytes = type0(4, 0, 600, 9, 1);
        bytes.extend_from_slice(&[0; 128]);
        r.read(&bytes, &mut Vec::new()).unwrap();
        let bytes = type0(5, 0, 600, 9, 1);
        assert_eq!(
            r.read(&bytes, &mut Vec::new()),
            Err(ChunkError::TooMuchBuffered { limit: 1000 })
        );
    }

    #[test]
    fn a_header_that_claims_megabytes_reserves_only_a_chunk() {
        let mut r = reader();
        r.read(&type0(4, 0, 8 << 20, 9, 1), &mut Vec::new())
            .unwrap();
        let held = r.streams[0].partial.as_ref().unwrap().capacity();
        assert!(held <= DEFAULT_CHUNK_SIZE as usize, "{held}");
    }

    #[test]
    fn abort_drops_the_unfinished_message() {
        let mut bytes = type0(4, 0, 300, 9, 1);
        bytes.extend_from_slice(&[0; 128]);
        bytes.extend_from_slice(&type0(2, 0, 4, 2, 0));
        bytes.extend_from_slice(&4u32.to_be_bytes());
        bytes.extend_from_slice(&type0(4, 0, 2, 9, 1));
        bytes.extend_from_slice(b"ok");
        let mut r = reader();
        let m = read_all(&mut r, &bytes).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(&m[0].payload[..], b"ok");
        assert_eq!(r.buffered, 0);
    }
}
