//! OME signalling messages from a player, and the SDP answer one carries
//! (parsed by str0m as the engine does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::webrtc::signal::{ClientMessage, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for session in [None, Some(1)] {
        if let Ok(ClientMessage::Answer { sdp }) = parse(text, session) {
            let _ = str0m::change::SdpAnswer::from_sdp_string(&sdp);
        }
    }
});
