//! The REST API's request bodies (a new stream, a playback token request)
//! as the handlers parse and check them.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use streamd::api::{NewStream, TokenRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = serde_json::from_slice::<NewStream>(data)
        && let Ok(name) = n.check()
    {
        assert!(!name.is_empty() && !name.chars().any(char::is_control));
    }
    if let Ok(t) = serde_json::from_slice::<TokenRequest>(data)
        && let Ok(ttl) = t.ttl(Duration::from_secs(3600))
    {
        assert!(!ttl.is_zero() && ttl <= Duration::from_secs(3600));
    }
});
