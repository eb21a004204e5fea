//! The chunk reader alone, byte by byte and whole: both must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::ingest::rtmp::chunk::{ChunkReader, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_media_message: 1 << 16,
        max_control_message: 1 << 12,
        max_buffered: 1 << 17,
        max_chunk_streams: 8,
    };
    let mut whole = ChunkReader::new(limits);
    let mut a = Vec::new();
    let ra = whole.read(data, &mut a);
    let mut bytewise = ChunkReader::new(limits);
    let mut b = Vec::new();
    let mut rb = Ok(());
    for byte in data {
        rb = bytewise.read(std::slice::from_ref(byte), &mut b);
        if rb.is_err() {
            break;
        }
    }
    assert_eq!(ra, rb);
    assert_eq!(a, b);
});
