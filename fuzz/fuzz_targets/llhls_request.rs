//! An LL-HLS request's file name and query, as the HTTP handler parses
//! them: every name accepted denotes a file whose written name parses
//! back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamd::llhls::playlist::names;
use streamd::llhls::request::{File, parse_directives, parse_file};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, query) = text.split_once('?').unwrap_or((text, ""));
    let _ = parse_directives(Some(query));
    let instance = "0badcafe";
    if let Some(parsed) = parse_file(file, instance) {
        let written = match &parsed {
            File::Master => "llhls.m3u8".to_owned(),
            File::Media { track } => names::media_playlist(track, instance),
            File::Init { track, id } => names::init(track, instance, *id),
            File::Segment { track, msn } => names::segment(track, instance, *msn),
            File::Part { track, msn, index } => names::part(track, instance, *msn, *index),
        };
        assert_eq!(parse_file(&written, instance), Some(parsed));
    }
});
