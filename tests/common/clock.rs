//! The glass-to-glass clock: the test publisher draws its own wall clock
//! into every picture and clicks on every wall-clock second, so a player
//! can tell how old what it shows is without trusting anything the server
//! stamps (EXT-X-PROGRAM-DATE-TIME, RTP timestamps, sender reports).
//!
//! The code (the decoders in tests/browser/clock.mjs and
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

/// The code in a luma plane (`stride` bytes per row), if the row of blocks
/// reads as one: the marker right and the check agreeing.
pub fn read(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
    let strip = height / 8;
    if width < BLOCKS * 2 || strip < 2 || luma.len() < stride * strip {
        return None;
    }
    let bits: Vec<bool> = (0..BLOCKS)
        .map(|b| {
            // The middle of the block: away from its edges, which the
            // encoder and the scalers blur.
            let x0 = (width * b) / BLOCKS + width / BLOCKS * 3 / 10;
            let x1 = (width * b) / BLOCKS + width / BLOCKS * 7 / 10;
            let (mut sum, mut n) = (0u64, 0u64);
            for y in strip / 4..strip * 3 / 4 {
                for x in x0..=x1 {
                    sum += u64::from(luma[y * stride + x]);
                    n += 1;
                }
            }
            sum > 128 * n.max(1)
        })
        .collect();
    if !bits[0] || bits[1] {
        return None;
    }
    let number = |bits: &[bool]| bits.iter().fold(0u64, |n, b| n * 2 + u64::from(*b));
    let ms = number(&bits[2..22]);
    (ms < WRAP && ms % 13 == number(&bits[22..26])).then_some(ms)
}

/// How old a picture showing `code` is at Unix time `now_ms`, in ms; the
/// code wraps every 1,000 s, so anything within a minute ahead of `now`
/// reads as a small negative age (clocks a little apart), not as 16 min.
pub fn age_ms(code: u64, now_ms: u64) -> i64 {
    let age = ((now_ms % WRAP) + WRAP - code) % WRAP;
    if age > WRAP - 60_000 {
        age as i64 - WRAP as i64
    } else {
        age as i64
    }
}
