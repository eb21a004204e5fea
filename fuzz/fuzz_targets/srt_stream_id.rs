//! An SRT caller's stream id (up to 512 bytes of anything), in every form
//! streamd reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::ingest::srt::streamid::StreamId;

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = StreamId::parse(data) {
        assert!(!id.app.is_empty() && !id.stream.is_empty());
        assert!(!id.stream.contains('/'));
    }
});
