//! A WHIP (or WHEP) client's SDP offer, accepted as the WHIP session core
//! accepts one: str0m parses it and answers with our codecs, and the core
//! reads the media, codecs and simulcast layers from it. An accepted
//! session is closed again, so the core stays the same size.
#![no_main]

use std::cell::RefCell;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use streamd::ingest::whip::session::WhipCore;

thread_local! {
    static CORE: RefCell<WhipCore> = RefCell::new(
        WhipCore::new(
            vec!["127.0.0.1:9".parse().unwrap()],
            None,
            Duration::from_secs(30),
            4,
        )
        .expect("a WHIP core"),
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    CORE.with(|core| {
        let mut core = core.borrow_mut();
        if let Ok(accepted) = core.accept(text, false, Instant::now()) {
            assert!(core.close(accepted.session));
        }
    });
});
