//! FLV audio and video tag bodies, as RTMP messages carry them.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamd::ingest::flv;

fuzz_target!(|data: &[u8]| {
    let _ = flv::parse_video(Bytes::copy_from_slice(data));
    let _ = flv::parse_audio(Bytes::copy_from_slice(data));
});
