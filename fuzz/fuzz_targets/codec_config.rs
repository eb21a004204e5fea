//! Codec configuration a publisher sends: avcC (then its SPS, and the NAL
//! units of a frame split with its length size), hvcC and av1C (Enhanced
//! RTMP; then the OBUs of an AV1 frame) and AAC's AudioSpecificConfig.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamd::media::aac::AacConfig;
use streamd::media::av1::{self, Av1Config};
use streamd::media::h264::{AvcConfig, SpsInfo, annexb_nalus};
use streamd::media::hevc::HevcConfig;

fuzz_target!(|data: &[u8]| {
    let _ = AacConfig::parse(Bytes::copy_from_slice(data));
    let _ = SpsInfo::parse(data);
    let _ = annexb_nalus(data);
    let _ = av1::check_frame(Bytes::copy_from_slice(data));
    let _ = Av1Config::parse(Bytes::copy_from_slice(data));
    // A WebRTC publisher's in-band sequence header, and its key frames.
    let _ = Av1Config::from_sequence_header(data);
    let _ = av1::is_key_frame(data, false);
    let _ = av1::sequence_header_obu(data);
    if let Ok(config) = HevcConfig::parse(Bytes::copy_from_slice(data)) {
        for nal in config.nalus(data).flatten() {
            let _ = nal.len();
        }
    }
    if let Ok(config) = AvcConfig::parse(Bytes::copy_from_slice(data)) {
        for nal in config.nalus(data).flatten() {
            let _ = SpsInfo::parse(nal);
        }
    }
});
