//! MPEG-TS as an SRT publisher sends it, all the way onto a broadcast's
//! tracks (PSI tables, PES, ADTS, H.264 parameter sets, timestamps), fed in
//! the pieces the input's first byte chooses.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use streamd::bus::{Registry, Retention, StreamPath};
use streamd::ingest::mpegts::TsIngest;
use streamd::ingest::tags::Arrival;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let registry = Registry::new(Duration::ZERO, Retention::default());
    let broadcast = registry
        .publish(StreamPath::new("app", "fuzz").expect("a valid path"))
        .expect("a new broadcast");
    let mut ingest = TsIngest::new(broadcast);
    let piece = usize::from(split).max(1) * 8;
    let at = Arrival::now();
    for input in data.chunks(piece) {
        if ingest.push(input, at).is_err() {
            return;
        }
    }
});
