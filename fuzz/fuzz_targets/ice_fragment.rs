//! The SDP fragment of a WHIP/WHEP PATCH (trickle ICE, ICE restarts), and
//! its candidates as str0m reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::http::sdp::IceFragment;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(fragment) = IceFragment::parse(text) {
        let _ = fragment.parsed_candidates();
    }
});
