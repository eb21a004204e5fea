//! ICE-TCP (RFC 4571 framing) as the listener reads it: bytes cut where
//! the input says, frames out, and the first frame routed by its STUN
//! USERNAME. The deframer must never hold more than one frame beyond what
//! it was handed, whatever the lengths claim.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::ice_tcp::{Deframer, LiveUfrags, route};

fuzz_target!(|data: &[u8]| {
    // The first byte says how big the reads are.
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let live = LiveUfrags::default();
    live.insert("00abcdef", 0);
    live.insert("01abcdef", 1);
    let mut frames = Deframer::default();
    let mut first = true;
    let mut taken = 0;
    for read in data.chunks(step) {
        frames.push(read);
        while let Some(frame) = frames.next_frame() {
            taken += 2 + frame.len();
            if first {
                let _ = route(&frame, 2, &live);
                first = false;
            }
        }
        assert!(frames.pending() <= 2 + 65_535 + step);
    }
    assert_eq!(taken + frames.pending(), data.len());
});
