//! A whole RTMP connection: a valid handshake, then the fuzzer's bytes as
//! the chunk stream, fed in the pieces the input's first byte chooses. Any
//! publish request is accepted, so media and metadata paths are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::ingest::rtmp::{RtmpConnection, RtmpEvent};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let mut conn = RtmpConnection::new();
    let mut c0c1 = vec![3u8];
    c0c1.extend_from_slice(&[0u8; 1536]);
    let s = conn.feed(&c0c1).expect("handshake");
    conn.feed(&s.send[1..1 + 1536]).expect("handshake");
    let piece = usize::from(split).max(1);
    for input in data.chunks(piece) {
        let Ok(out) = conn.feed(input) else { return };
        for e in out.events {
            if let RtmpEvent::PublishRequested { request_id, .. } = e {
                if conn.accept(request_id).is_err() {
                    return;
                }
            }
        }
    }
});
