//! Transcoding: every published stream into the ABR ladder, and its AAC into
//! Opus for WebRTC, in process with FFmpeg (libavcodec, libswscale, libx264,
//! libopus).
//!
//! A transcoder is a bus consumer and producer like any other. Per stream:
//!
//! ```text
//!  bus "video" ──▶ decode thread ──┬─▶ rung thread (scale + x264) ──▶ bus "720p"
//!  (reader task:   (decode once,    ├─▶ rung thread                ──▶ bus "480p"
//!   drops whole     place IDRs)     └─▶ rung thread                ──▶ bus "360p"
//!   GOPs if the
//!   decoder lags)
//!  bus "audio" ──▶ audio thread (AAC → 48 kHz stereo → libopus)    ──▶ bus "opus"
//! ```
//!
//! - **Decode once, encode in parallel**: one thread per rung, so both cores
//!   are busy (the ffmpeg CLI's single main loop is what limits it).
//! - **Aligned keyframes**: the decode thread decides, by PTS, which
//!   pictures are segment boundaries (every `keyframe_interval` from the
//!   stream's start, or the source's keyframes when the top rung bypasses);
//!   every rung forces an IDR there and starts a bus group with it. An
//!   on-demand keyframe (for a WebRTC viewer) is an IDR inside a group.
//! - **Never stalls ingest**: when the encoders are behind, decoded pictures
//!   are dropped for every rung alike (keyframe placement is kept); when the
//!   decoder is behind, whole GOPs are skipped. Both are counted in
//!   `streamd_transcode_dropped_frames_total` and logged rate-limited.
//! - **Exact timing**: rung frames keep the source's timestamps; Opus times
//!   count samples from the source's first AAC timestamp.

mod catalog;
pub mod codec;
mod pipeline;
pub mod service;

use crate::config::RungConfig;

pub use pipeline::Transcoders;
pub use service::OfflineLadder;

/// A rung as it will be encoded for one source.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRung {
    pub config: RungConfig,
    pub width: u32,
    pub height: u32,
    /// The source passes through as this rung.
    pub bypass: bool,
}

/// Fits `src` into the `bx` box keeping its aspect ratio, with even
/// dimensions (x264 needs them for 4:2:0).
pub fn fit(src: (u32, u32), bx: (u32, u32)) -> (u32, u32) {
    let (sw, sh) = (u64::from(src.0.max(1)), u64::from(src.1.max(1)));
    let (bw, bh) = (u64::from(bx.0), u64::from(bx.1));
    let even = |x: f64| ((x / 2.0).round() as u32 * 2).max(2);
    if sw * bh <= sh * bw {
        // Height-bound.
        (even((sw * bh) as f64 / sh as f64).min(bx.0), bh as u32)
    } else {
        (bw as u32, even((sh * bw) as f64 / sw as f64).min(bx.1))
    }
}

/// The rungs to produce for a `width`x`height` H.264 source whose
/// publisher declared `declared_kbps`:
/// - the top rung bypasses when it allows it and the source fits it;
/// - rungs larger than the source are skipped, and so are rungs that would
///   come out the same size as a larger one;
/// - a source smaller than every rung (or than every rung but a bypassed
///   one) still gets the smallest rung, at the source's size, so there is
///   always an encoded (WebRTC-safe) rendition.
pub fn plan(
    width: u32,
    height: u32,
    declared_kbps: Option<u32>,
    ladder: &[RungConfig],
) -> Vec<PlannedRung> {
    let mut out: Vec<PlannedRung> = Vec::new();
    for (i, r) in ladder.iter().enumerate() {
        let bypass = i == 0
            && r.bypass
            && width <= r.width
            && height <= r.height
            && declared_kbps.is_some_and(|k| k <= r.bitrate_kbps);
        let (w, h) = if bypass {
            (width, height)
        } else {
            fit((width, height), (r.width, r.height))
        };
        if !bypass && (w > width || h > height) {
            continue;
        }
        if out.iter().any(|o| (o.width, o.height) == (w, h)) {
            continue;
        }
        out.push(PlannedRung {
            config: r.clone(),
            width: w,
            height: h,
            bypass,
        });
    }
    // Always one encoded (WebRTC-safe, keyframe-on-request) rendition.
    if !out.iter().any(|r| !r.bypass)
        && let Some(last) = ladder.last()
    {
        // The rung's size for this source, as its encoder thread computes it.
        let (w, h) = rung_size((width, height), (last.width, last.height));
        out.push(PlannedRung {
            config: last.clone(),
            width: w,
            height: h,
            bypass: false,
        });
    }
    out
}

/// A rung's size for a `src` picture: fitted into its box, but never larger
/// than the source (no upscaling; a shrunk source gives smaller rungs).
pub fn rung_size(src: (u32, u32), bx: (u32, u32)) -> (u32, u32) {
    let (w, h) = fit(src, bx);
    if w > src.0 || h > src.1 {
        fit(src, ((src.0 & !1).max(2), (src.1 & !1).max(2)))
    } else {
        (w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TranscodeConfig;

    fn names(p: &[PlannedRung]) -> Vec<(&str, u32, u32, bool)> {
        p.iter()
            .map(|r| (r.config.name.as_str(), r.width, r.height, r.bypass))
            .collect()
    }

    #[test]
    fn fit_keeps_aspect_and_even_sizes() {
        assert_eq!(fit((1920, 1080), (1280, 720)), (1280, 720));
        assert_eq!(fit((1280, 720), (854, 480)), (854, 480));
        // 4:3 into a 16:9 box is height-bound.
        assert_eq!(fit((640, 480), (1280, 720)), (960, 720));
        // Portrait into a landscape box.
        assert_eq!(fit((720, 1280), (1280, 720)), (406, 720));
        // Odd results round to even.
        assert_eq!(fit((1000, 563), (640, 360)), (640, 360));
        assert_eq!(fit((1921, 1081), (640, 360)), (640, 360));
        assert_eq!(fit((1, 1), (640, 360)), (360, 360));
        assert_eq!(rung_size((1280, 720), (640, 360)), (640, 360));
        assert_eq!(rung_size((320, 240), (640, 360)), (320, 240));
        assert_eq!(rung_size((321, 241), (1920, 1080)), (320, 240));
    }

    #[test]
    fn default_ladder_for_a_720p_source_skips_1080p() {
        let ladder = TranscodeConfig::default().ladder;
        let p = plan(1280, 720, Some(3000), &ladder);
        assert_eq!(
            names(&p),
            vec![
                ("720p", 1280, 720, false),
                ("480p", 854, 480, false),
                ("360p", 640, 360, false)
            ]
        );
        assert_eq!(plan(1920, 1080, None, &ladder).len(), 4);
    }

    #[test]
    fn bypass_needs_a_fitting_source_and_declared_bitrate() {
        let mut ladder = TranscodeConfig::default().ladder;
        ladder[0].bypass = true;
        let p = plan(1280, 720, Some(3000), &ladder);
        assert_eq!(p[0].config.name, "1080p");
        assert!(p[0].bypass);
        assert_eq!((p[0].width, p[0].height), (1280, 720));
        // 720p would be the same size as the bypassed source: skipped.
        assert_eq!(
            names(&p[1..]),
            vec![("480p", 854, 480, false), ("360p", 640, 360, false)]
        );
        // A bypassed source below every other rung: one encoded rung too.
        let small = plan(400, 224, Some(500), &ladder);
        assert_eq!(
            names(&small),
            vec![("1080p", 400, 224, true), ("360p", 400, 224, false)]
        );
        // Too much bitrate, or none declared: encoded.
        assert!(!plan(1920, 1080, Some(6000), &ladder)[0].bypass);
        assert!(!plan(1920, 1080, None, &ladder)[0].bypass);
        // Larger than the box: encoded.
        assert!(!plan(2560, 1440, Some(3000), &ladder)[0].bypass);
    }

    #[test]
    fn tiny_source_gets_one_rung_at_its_size() {
        let ladder = TranscodeConfig::default().ladder;
        let p = plan(320, 240, None, &ladder);
        assert_eq!(names(&p), vec![("360p", 320, 240, false)]);
        let p = plan(321, 241, None, &ladder);
        assert_eq!(names(&p), vec![("360p", 320, 240, false)]);
    }
}
