//! The AMF0 decoder; what decodes re-encodes and decodes to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::ingest::rtmp::amf0::{Amf0, decode_all};

fuzz_target!(|data: &[u8]| {
    let Ok(values) = decode_all(data) else { return };
    let mut again = Vec::new();
    for v in &values {
        v.encode(&mut again);
    }
    let back = decode_all(&again).expect("our own encoding decodes");
    // NaN is not equal to itself: compare the encodings instead.
    let mut twice = Vec::new();
    for v in &back {
        v.encode(&mut twice);
    }
    assert_eq!(again, twice);
    let _: Vec<&Amf0> = values.iter().collect();
});
