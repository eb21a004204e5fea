//! The catalogs this stage publishes (see [`crate::bus::Catalog`]): the
//! ladder when the app transcodes, and the source as it came when it does
//! not or when the ladder cannot be built. Pure functions of what the
//! broadcast holds.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bus::{BroadcastUpdate, Catalog, SOURCE_VIDEO, TrackInfo, TrackKind, VideoEntry};
use crate::media::CodecConfig;
use crate::time::MediaTime;

/// The publisher's track of `kind`: its default video track where it has
/// one (a multitrack publisher may start another first), else the first.
pub fn source_track(update: &BroadcastUpdate, kind: TrackKind) -> Option<String> {
    source_tracks(update, kind).next().map(|t| t.name.clone())
}

/// The publisher's tracks of `kind`, the default video track first.
fn source_tracks(update: &BroadcastUpdate, kind: TrackKind) -> impl Iterator<Item = &TrackInfo> {
    let of_kind = move |t: &&TrackInfo| !t.derived && t.kind == kind;
    let default = update
        .tracks
        .iter()
        .filter(of_kind)
        .find(|t| t.name == SOURCE_VIDEO);
    default.into_iter().chain(
        update
            .tracks
            .iter()
            .filter(of_kind)
            .filter(|t| t.name != SOURCE_VIDEO || t.kind != TrackKind::Video),
    )
}

/// The track the transcoder writes a WHIP publisher's Opus to, in AAC.
pub const AAC_TRACK: &str = "aac";

/// The audio the catalog lists: AAC for LL-HLS (`.0`) and, when the
/// publisher sent Opus (WHIP), that Opus for WebRTC (`.1`). A publisher's
/// AAC is listed as it came; its Opus is listed once the transcoder's AAC
/// track exists.
pub fn source_audio(update: &BroadcastUpdate) -> (Option<String>, Option<String>) {
    let audio = source_track(update, TrackKind::Audio);
    if update.meta.opus_audio {
        let aac = update
            .tracks
            .iter()
            .find(|t| t.derived && t.kind == TrackKind::Audio && t.name == AAC_TRACK)
            .map(|t| t.name.clone());
        (aac, audio)
    } else {
        (audio, None)
    }
}

/// Whether the publisher's Opus still waits for its AAC: LL-HLS would
/// otherwise start without audio.
pub fn aac_pending(update: &BroadcastUpdate, c: &Catalog) -> bool {
    update.meta.opus_audio && source_track(update, TrackKind::Audio).is_some() && c.audio.is_none()
}

/// The broadcast served as its publisher sent it: its video (which WebRTC
/// serves as OME does when it is H.264, trusting the publisher to send no
/// B-frames; HEVC and AV1 go to LL-HLS only) and its audio: AAC for
/// LL-HLS, or Opus (WHIP) for WebRTC.
///
/// The first video track is `source`; a multitrack publisher's other
/// renditions (or a simulcast publisher's layers) are listed by their
/// track names once their codec is known, largest picture first (the
/// catalog then sorts by bitrate once [`with_rates`] has them all, which
/// for layers of one picture is the same order). `configs` has each video
/// track's configuration
/// once its first frame is there. Complete once the first track's codec is
/// known and the audio is there, unless the publisher did not declare any.
pub fn source_catalog(
    update: &BroadcastUpdate,
    configs: &HashMap<String, Arc<CodecConfig>>,
    fallback: Option<String>,
) -> Catalog {
    let mut entries = Vec::new();
    let mut first_known = false;
    for (i, t) in source_tracks(update, TrackKind::Video).enumerate() {
        let config = configs.get(&t.name).map(|c| &**c);
        if i == 0 {
            first_known = config.is_some();
        } else if config.is_none() {
            continue;
        }
        let (width, height) = config.and_then(CodecConfig::video_size).unwrap_or_default();
        entries.push(VideoEntry {
            name: if i == 0 {
                "source".into()
            } else {
                t.name.clone()
            },
            track: t.name.clone(),
            // Unknown: the publisher's figure is only a hint.
            bitrate: 0,
            width,
            height,
            passthrough: true,
            webrtc_safe: matches!(config, Some(CodecConfig::H264(_))),
        });
    }
    entries.sort_by_key(|e| std::cmp::Reverse(u64::from(e.width) * u64::from(e.height)));
    let (audio, webrtc_audio) = source_audio(update);
    // A publisher's Opus waits for its AAC, as LL-HLS must start with it.
    let complete = first_known && (audio.is_some() || update.meta.has_audio != Some(true));
    Catalog {
        video: entries,
        audio,
        webrtc_audio,
        complete,
        fallback,
    }
}

/// Gives the source renditions their measured bitrates (`rates`, by
/// track), so that WebRTC's ABR can choose between a simulcast or
/// multitrack publisher's layers. All or none: until every one listed is
/// measured they all stay 0 (the catalog sorts by bitrate, and one layer
/// measured before the others would lead it).
pub fn with_rates(mut catalog: Catalog, rates: &HashMap<String, u32>) -> Catalog {
    let mut sources = catalog.video.iter_mut().filter(|v| v.passthrough);
    if sources.all(|v| rates.contains_key(&v.track)) {
        for v in catalog.video.iter_mut().filter(|v| v.passthrough) {
            v.bitrate = rates[&v.track];
        }
    }
    catalog
}

/// The media time a bitrate is measured over.
const RATE_WINDOW: MediaTime = MediaTime::from_millis(2000);
/// A measured bitrate is reported again once it moves by this fraction.
const RATE_CHANGE: f64 = 0.2;

/// A source track's bitrate as it comes, measured over windows of media
/// time (a publisher's declared rate is only a hint, and simulcast layers
/// declare none). Sans-IO: frames in, a rate out when it is new.
#[derive(Default)]
pub struct RateMeter {
    /// The window's first frame's time, and the publisher session.
    start: Option<(u32, MediaTime)>,
    bytes: u64,
    reported: Option<u32>,
}

impl RateMeter {
    /// Counts a frame of `bytes` at `dts` from publisher session `session`;
    /// at the end of a window, the rate in bits per second when it is the
    /// first or moved by more than [`RATE_CHANGE`] from the last reported.
    pub fn frame(&mut self, session: u32, dts: MediaTime, bytes: usize) -> Option<u32> {
        let (s, start) = match self.start {
            // A new publisher session, or time that went back: start over.
            Some((s, start)) if s == session && dts >= start => (s, start),
            other => {
                // A new session is reported anew, even at the same rate.
                if other.is_some_and(|(s, _)| s != session) {
                    self.reported = None;
                }
                self.start = Some((session, dts));
                self.bytes = bytes as u64;
                return None;
            }
        };
        let span = dts - start;
        if span < RATE_WINDOW.rescale(span.timescale()) {
            self.bytes += bytes as u64;
            return None;
        }
        let bps = (self.bytes as f64 * 8.0 / span.as_secs_f64()).min(f64::from(u32::MAX)) as u32;
        self.start = Some((s, dts));
        self.bytes = bytes as u64;
        let moved = self
            .reported
            .is_none_or(|r| (f64::from(bps) - f64::from(r)).abs() > f64::from(r) * RATE_CHANGE);
        if moved {
            self.reported = Some(bps);
        }
        moved.then_some(bps)
    }
}

/// Whether a transcoded broadcast's catalog is complete: its video is
/// listed, and so is its Opus track unless there is no audio to encode or
/// Opus is off.
pub fn ladder_complete(c: &Catalog, opus: bool) -> bool {
    !c.video.is_empty() && (c.webrtc_audio.is_some() || c.audio.is_none() || !opus)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{BroadcastMeta, BroadcastStatus, TrackInfo};

    fn h264() -> CodecConfig {
        CodecConfig::H264(
            crate::media::AvcConfig::parse(bytes::Bytes::from_static(
                crate::media::h264::tests::AVCC_320X240,
            ))
            .unwrap(),
        )
    }

    /// `track` known to carry `config`.
    fn known(track: &str, config: CodecConfig) -> HashMap<String, Arc<CodecConfig>> {
        HashMap::from([(track.to_owned(), Arc::new(config))])
    }

    fn update(tracks: Vec<TrackInfo>, has_audio: Option<bool>) -> BroadcastUpdate {
        BroadcastUpdate {
            status: BroadcastStatus::Live { session: 0 },
            tracks,
            meta: BroadcastMeta {
                has_audio,
                video_bitrate_kbps: Some(2500),
                ..Default::default()
            },
            catalog: None,
        }
    }

    #[test]
    fn the_source_is_complete_once_its_declared_tracks_are_there() {
        let v = TrackInfo::source("video", TrackKind::Video);
        let a = TrackInfo::source("audio", TrackKind::Audio);
        // Audio declared but not there yet: wait for it.
        let c = source_catalog(
            &update(vec![v.clone()], Some(true)),
            &known("video", h264()),
            None,
        );
        assert_eq!(c.video[0].track, "video");
        assert_eq!(c.video[0].name, "source");
        assert!(c.video[0].webrtc_safe && c.video[0].passthrough);
        assert!(!c.complete);
        // Nothing declared: the video is enough.
        assert!(
            source_catalog(
                &update(vec![v.clone()], None),
                &known("video", h264()),
                None
            )
            .complete
        );
        let c = source_catalog(
            &update(vec![v.clone(), a], Some(true)),
            &known("video", h264()),
            None,
        );
        assert!(c.complete);
        assert_eq!(c.audio.as_deref(), Some("audio"));
        assert_eq!(c.webrtc_audio, None);
        // No video: never complete, whatever the audio.
        let only_audio = TrackInfo::source("audio", TrackKind::Audio);
        assert!(!source_catalog(&update(vec![only_audio], None), &HashMap::new(), None).complete);
    }

    #[test]
    fn hevc_and_av1_sources_are_not_for_webrtc_and_an_unknown_codec_is_not_complete() {
        use crate::media::hevc::tests::{HVCC_320X240, hex};
        let v = TrackInfo::source("video", TrackKind::Video);
        let u = update(vec![v], None);
        let c = source_catalog(&u, &HashMap::new(), None);
        assert!(!c.complete, "the first frame tells the codec");
        let hevc = CodecConfig::Hevc(crate::media::HevcConfig::parse(hex(HVCC_320X240)).unwrap());
        let c = source_catalog(&u, &known("video", hevc), None);
        assert!(c.complete);
        assert!(!c.video[0].webrtc_safe);
        assert!(source_catalog(&u, &known("video", h264()), None).video[0].webrtc_safe);
    }

    #[test]
    fn a_multitrack_publishers_renditions_are_listed_once_known_largest_first() {
        use crate::media::hevc::tests::{HVCC_1080P_MAIN10, hex};
        let tracks = vec![
            TrackInfo::source("video", TrackKind::Video),
            TrackInfo::source("video1", TrackKind::Video),
        ];
        let u = update(tracks, None);
        // Only track 0 known: complete, with one rendition.
        let mut configs = known("video", h264());
        let c = source_catalog(&u, &configs, None);
        assert!(c.complete);
        assert_eq!(c.video.len(), 1);
        // Track 1 (1080p HEVC) known: listed first, by its track name.
        let hevc =
            CodecConfig::Hevc(crate::media::HevcConfig::parse(hex(HVCC_1080P_MAIN10)).unwrap());
        configs.insert("video1".into(), Arc::new(hevc));
        let c = source_catalog(&u, &configs, None);
        let names: Vec<(&str, u32, bool)> = c
            .video
            .iter()
            .map(|v| (v.name.as_str(), v.height, v.webrtc_safe))
            .collect();
        assert_eq!(names, [("video1", 1080, false), ("source", 240, true)]);
    }

    #[test]
    fn derived_tracks_are_not_the_source() {
        let rung = TrackInfo::derived("720p", TrackKind::Video);
        let v = TrackInfo::source("video", TrackKind::Video);
        let c = source_catalog(
            &update(vec![rung, v], None),
            &known("video", h264()),
            Some("why".into()),
        );
        assert_eq!(c.video.len(), 1);
        assert_eq!(c.video[0].track, "video");
        assert_eq!(c.fallback.as_deref(), Some("why"));
    }

    #[test]
    fn a_ladder_waits_for_its_opus_track() {
        let mut c = Catalog {
            video: vec![VideoEntry {
                name: "720p".into(),
                track: "720p".into(),
                bitrate: 2_500_000,
                width: 1280,
                height: 720,
                passthrough: false,
                webrtc_safe: true,
            }],
            audio: Some("audio".into()),
            ..Default::default()
        };
        assert!(!ladder_complete(&c, true));
        assert!(ladder_complete(&c, false), "Opus is off");
        c.webrtc_audio = Some("opus".into());
        assert!(ladder_complete(&c, true));
        c.webrtc_audio = None;
        c.audio = None;
        assert!(ladder_complete(&c, true), "no audio to encode");
        c.video.clear();
        assert!(!ladder_complete(&c, true), "no video yet");
    }

    #[test]
    fn a_whip_publishers_opus_serves_webrtc_and_waits_for_its_aac() {
        let v = TrackInfo::source("video", TrackKind::Video);
        let opus = TrackInfo::source("audio", TrackKind::Audio);
        let mut u = update(vec![v.clone(), opus.clone()], Some(true));
        u.meta.opus_audio = true;
        // Before the AAC exists: WebRTC has its audio, LL-HLS has none,
        // and the catalog is not complete (LL-HLS would start without it).
        let c = source_catalog(&u, &known("video", h264()), None);
        assert_eq!(c.webrtc_audio.as_deref(), Some("audio"));
        assert_eq!(c.audio, None);
        assert!(!c.complete);
        assert!(aac_pending(&u, &c));
        u.tracks
            .push(TrackInfo::derived(AAC_TRACK, TrackKind::Audio));
        let c = source_catalog(&u, &known("video", h264()), None);
        assert_eq!(c.audio.as_deref(), Some(AAC_TRACK));
        assert!(c.complete && !aac_pending(&u, &c));
        // An RTMP publisher's AAC is listed as it came.
        let u = update(vec![v, opus], Some(true));
        assert_eq!(source_audio(&u), (Some("audio".into()), None));
    }

    /// 30 fps of 2,500-byte frames is 600 kbps: reported at the end of the
    /// first 2 s window, then only when it moves by more than 20%; a new
    /// publisher session starts over.
    #[test]
    fn a_rate_meter_reports_a_tracks_bitrate_when_it_moves() {
        use crate::time::Timescale;
        // Frame i of an exact 30 fps in 90 kHz.
        let feed = |m: &mut RateMeter, session, frames: std::ops::RangeInclusive<i64>, bytes| {
            frames
                .filter_map(|i| m.frame(session, MediaTime::new(i * 3000, Timescale::MPEG), bytes))
                .collect::<Vec<u32>>()
        };
        let mut m = RateMeter::default();
        // The window of frames 0-59 closes at frame 60 (2 s).
        assert_eq!(feed(&mut m, 0, 0..=60, 2500), [600_000]);
        // Up by 12% (2,500 + 59 × 2,800 bytes): nothing new.
        assert_eq!(feed(&mut m, 0, 61..=120, 2800), Vec::<u32>::new());
        // Halved (2,800 + 59 × 1,250): reported; then steady at 300 kbps.
        assert_eq!(feed(&mut m, 0, 121..=240, 1250), [306_200]);
        // Session 1 starts over: no rate until its first window ends.
        assert!(feed(&mut m, 1, 0..=30, 5000).is_empty());
        assert_eq!(feed(&mut m, 1, 31..=60, 5000), [1_200_000]);
        // Session 2 at the same rate is reported again (its outputs start
        // with no rate).
        assert!(feed(&mut m, 2, 0..=30, 5000).is_empty());
        assert_eq!(feed(&mut m, 2, 31..=60, 5000), [1_200_000]);
        // Time that goes back starts a window over too.
        assert!(feed(&mut m, 1, 10..=40, 5000).is_empty());
    }

    #[test]
    fn measured_rates_go_to_the_source_renditions_only() {
        // A rung of the ladder, and a publisher's rendition.
        let c = Catalog {
            video: vec![
                VideoEntry::rung("720p", 2_500_000, true),
                VideoEntry::rung("video1", 0, false),
            ],
            ..Default::default()
        };
        let rates = HashMap::from([("720p".into(), 9), ("video1".into(), 350_000)]);
        let c = with_rates(c, &rates);
        assert_eq!(
            c.video.iter().map(|v| v.bitrate).collect::<Vec<_>>(),
            [2_500_000, 350_000]
        );
        // All or none: one of two layers measured leaves both at 0.
        let layers = Catalog {
            video: vec![
                VideoEntry::rung("video", 0, false),
                VideoEntry::rung("video1", 0, false),
            ],
            ..Default::default()
        };
        let one = HashMap::from([("video1".into(), 350_000)]);
        let c = with_rates(layers.clone(), &one);
        assert!(c.video.iter().all(|v| v.bitrate == 0), "{c:?}");
        let both = HashMap::from([("video".into(), 900_000), ("video1".into(), 350_000)]);
        let c = with_rates(layers, &both);
        assert_eq!(
            c.video.iter().map(|v| v.bitrate).collect::<Vec<_>>(),
            [900_000, 350_000]
        );
    }
}
