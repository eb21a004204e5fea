//! The glass-to-glass clock: the test publisher draws its own wall clock
//! into every picture and clicks on every wall-clock second, so a player
//! can tell how old what it shows is without trusting anything the server
//! stamps (EXT-X-PROGRAM-DATE-TIME, RTP timestamps, sender reports).
//!
//! The code (the decoders in tests/browser/clock.js and
//! tests/python/aiortc_viewer.py read exactly this):
//! - **Video**: the top eighth of the picture is a row of 26 equal blocks
//!   across its full width, white for 1 and black for 0. Block 0 is white
//!   and block 1 black (the marker). Blocks 2–21 are `ms`, the Unix time in
//!   milliseconds modulo 1,000,000, in 20 bits, most significant first.
//!   Blocks 22–25 are `ms mod 13` in 4 bits, a check: a single misread bit
//!   changes `ms` by a power of two, which 13 never divides.
//!   A reader's latency is its own `now mod 1,000,000` minus `ms` (modulo
//!   1,000,000), taken when the picture is displayed.
//! - **Audio**: a 1 kHz tone for the first 30 ms of every wall-clock
//!   second, silence otherwise.
//!
//! ffmpeg draws both from the time each frame passes its filter graph
//! (`RTCTIME`, right after `-re` releases it, as a camera would capture
//! it), so the publisher's encoder, the network and the server are all
//! inside the measurement. The publisher and the players run on one host
//! and read one clock. Frame timestamps are then put back on the regular
//! 30 fps (and sample-count) grid.

#![allow(dead_code)] // the tests and the benches use different parts

/// Blocks in the row.
pub const BLOCKS: usize = 26;
/// `ms` wraps at this (1,000 s), so the code is milliseconds within it.
pub const WRAP: u64 = 1_000_000;

/// The video filter chain (one input, one output) that draws the code.
pub fn video_filter() -> String {
    let ms = format!("mod(floor(t*1000),{WRAP})");
    let block = |i: usize, enable: Option<String>| {
        let mut f =
            format!("drawbox=x=iw*{i}/{BLOCKS}:y=0:w=iw/{BLOCKS}+1:h=ih/8:color=white:t=fill");
        if let Some(e) = enable {
            f += &format!(":enable='{e}'");
        }
        f
    };
    let mut chain = vec![
        // Microsecond timestamps, set to the wall clock: drawbox's `t`.
        "settb=1/1000000".to_string(),
        "setpts=RTCTIME".to_string(),
        "drawbox=x=0:y=0:w=iw:h=ih/8:color=black:t=fill".to_string(),
        block(0, None),
    ];
    for bit in 0..20 {
        let weight = 1u64 << (19 - bit);
        chain.push(block(2 + bit, Some(format!("mod(floor({ms}/{weight}),2)"))));
    }
    for bit in 0..4 {
        let weight = 1u64 << (3 - bit);
        chain.push(block(
            22 + bit,
            Some(format!("mod(floor(mod({ms},13)/{weight}),2)")),
        ));
    }
    // Back on the 30 fps grid.
    chain.push("setpts=N/(30*TB)".to_string());
    chain.join(",")
}

/// The audio filter chain: keeps its input (a 1 kHz sine) only for the
/// first 30 ms of each wall-clock second, stereo.
pub fn audio_filter() -> String {
    [
        "aformat=channel_layouts=stereo",
        "asettb=1/1000000",
        "asetpts=RTCTIME",
        "aeval='6*val(ch)*lt(mod(t\\,1)\\,0.03)':c=same",
        "asetpts=NB_CONSUMED_SAMPLES/SR/TB",
    ]
    .join(",")
}

/// The filter graph drawing the code on input 0's video (`[v]`) and
/// clicking on input 1's sine (`[a]`).
pub fn filter_graph() -> String {
    format!("[0:v]{}[v];[1:a]{}[a]", video_filter(), audio_filter())
}

/// ffmpeg arguments for the clocked test source: `testsrc2` of `size` at
/// 30 fps and the click track at `rate` Hz, each read in real time, with
/// the code drawn; maps the video, then the audio, for the caller's
/// encoders and output.
pub fn source_args(size: &str, rate: u32) -> Vec<String> {
    [
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("sine=frequency=1000:sample_rate={rate}"),
        "-filter_complex",
        &filter_graph(),
        "-map",
        "[v]",
        "-map",
        "[a]",
    ]
    .map(String::from)
    .to_vec()
}

/// Checks a player's reading of the glass-to-glass clock (see clock.rs;
/// the `clock` summary of tests/browser/clock.js or aiortc_viewer.py) over
/// `seconds` of playback: the code was read from nearly every frame, never
/// went back, advanced with playback, and no picture was older than
/// `bound_ms` (generous: a broken pipeline fails it, a busy machine does
/// not) or younger than 0. Returns its (p50, p95) in ms.
pub fn check(report: &serde_json::Value, seconds: f64, bound_ms: i64) -> (i64, i64) {
    check_joined(report, seconds, bound_ms, 0)
}

/// The ladder's keyframe interval (`[transcode] keyframe_interval`'s
/// default): the most a WebRTC viewer's first group can have aged.
pub const LADDER_GROUP_MS: i64 = 2000;

/// [`check`] for a WebRTC viewer. It joins on the current group, sent at
/// once from its keyframe and shown while playback catches up, so the
/// pictures before the first within `bound_ms` may be up to `group_ms`
/// older than it; there are at most 90 of them (3 s at 30 fps), and every
/// picture after them is within `bound_ms`.
pub fn check_joined(
    report: &serde_json::Value,
    seconds: f64,
    bound_ms: i64,
    group_ms: i64,
) -> (i64, i64) {
    let clock = &report["clock"];
    let n = |k: &str| {
        clock[k]
            .as_u64()
            .unwrap_or_else(|| panic!("no clock.{k}: {report}"))
    };
    let (frames, read, unreadable) = (n("frames"), n("read"), n("unreadable"));
    assert!(
        read as f64 >= seconds * 10.0,
        "the clock was read from {read} frames in {seconds} s: {clock}"
    );
    assert!(
        unreadable * 20 <= frames,
        "{unreadable} of {frames} frames did not read: {clock}"
    );
    assert_eq!(
        n("backwards"),
        0,
        "an older picture came after a newer one: {clock}"
    );
    let span = n("spanMs") as f64 / 1000.0;
    assert!(
        span >= seconds / 2.0,
        "the clock advanced {span} s in {seconds} s of playback: {clock}"
    );
    let mut ages: Vec<i64> = clock["agesMs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_i64())
        .collect();
    assert_eq!(ages.len() as u64, read, "{clock}");
    // The joining group's pictures, in the order shown.
    let joining = if group_ms > 0 {
        ages.iter().take_while(|&&a| a >= bound_ms).count()
    } else {
        0
    };
    assert!(
        joining <= 90,
        "{joining} pictures before one within {bound_ms} ms: {clock}"
    );
    if let Some(&oldest) = ages[..joining].iter().max() {
        assert!(
            oldest < bound_ms + group_ms,
            "a picture of the joining group was {oldest} ms old (bound {bound_ms} + {group_ms}): {clock}"
        );
    }
    let after = ages[joining..].iter().max().copied().unwrap_or(0);
    assert!(
        after < bound_ms,
        "a picture was {after} ms old (bound {bound_ms}): {clock}"
    );
    ages.sort();
    let min = ages[0];
    assert!(
        min > 0,
        "a picture was shown {min} ms before it was taken: {clock}"
    );
    let q = |q: f64| ages[((ages.len() as f64 * q) as usize).min(ages.len() - 1)];
    (q(0.5), q(0.95))
}

/// The median of what hls.js would have said the latency was, in ms
/// (`serverStampedLatencies` of tests/browser/hlsjs.mjs: its age from
/// EXT-X-PROGRAM-DATE-TIME, which the server stamps): reported beside the
/// clock's figure, never trusted.
pub fn server_stamped_p50_ms(report: &serde_json::Value) -> Option<f64> {
    let mut stamped: Vec<f64> = report["serverStampedLatencies"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    stamped.sort_by(f64::total_cmp);
    stamped.get(stamped.len() / 2).map(|s| (s * 1000.0).round())
}
