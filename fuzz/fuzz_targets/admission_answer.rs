//! An admission backend's answer, as streamd reads it: the decision, and
//! the app and stream a `new_url` redirects to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::auth::access::app_and_stream;
use streamd::auth::admission::{Decision, decide};

fuzz_target!(|data: &[u8]| {
    match decide(data) {
        Ok(Decision::Allowed {
            new_url: Some(url), ..
        }) => {
            if let Some((app, stream)) = app_and_stream(&url) {
                assert!(streamd::bus::StreamPath::new(&app, &stream).is_ok());
            }
        }
        Ok(Decision::Denied(reason)) => assert!(reason.chars().count() <= 200),
        _ => {}
    }
});
