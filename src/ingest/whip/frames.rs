//! From a WHIP publisher's depacketised RTP frames to bus frames.
//!
//! Sans-IO, the counterpart of [`crate::ingest::tags`] for WebRTC: the
//! caller passes each frame's payload (H.264 in Annex B, as str0m
//! depacketises it, or one Opus packet), its RTP timestamp and its arrival.
//! - Parameter sets travel in band: an SPS and PPS set (or change) the
//!   track's configuration, and frames are AVCC on the bus with them taken
//!   out.
//! - Video starts, and restarts after lost packets, at an IDR frame; the
//!   caller is told to ask the publisher for one ([`Step::need_keyframe`]).
//! - RTP timestamps are extended past their 32-bit wrap, and each track's
//!   timeline starts at the time its first frame arrived since the session
//!   began, so audio and video line up as they arrived.

use bytes::Bytes;

use crate::bus::{BroadcastMeta, BroadcastProducer, TrackInfo, TrackKind, TrackProducer};
pub use crate::ingest::annexb::Step;
use crate::ingest::annexb::{AccessUnit, AnnexBVideo};
use crate::ingest::tags::{
    AUDIO_TRACK, Arrival, IngestError, IngestStats, Notice, video_track_name, write_audio,
};
use crate::media::{CodecConfig, OpusConfig, VideoCodec};
use crate::time::{MediaTime, RtpTimestampUnwrapper, Timescale};

/// Opus's RTP clock.
const OPUS_CLOCK: Timescale = match Timescale::new(OpusConfig::CLOCK_RATE) {
    Some(t) => t,
    None => unreachable!(),
};

/// The payload of one depacketised RTP frame.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// An access unit: H.264 or HEVC in Annex B, or an AV1 temporal unit,
    /// of simulcast layer `layer` (0 without simulcast).
    Video {
        codec: VideoCodec,
        data: &'a [u8],
        layer: usize,
    },
    /// One Opus packet.
    Opus { data: &'a [u8], channels: u8 },
}

/// One track's timeline: extended RTP time, placed at its first arrival.
struct Timeline {
    unwrap: RtpTimestampUnwrapper,
    /// Added to the extended RTP time: the first frame lands at its arrival
    /// since the session began.
    offset: Option<i64>,
    last: Option<MediaTime>,
}

impl Timeline {
    fn new(scale: Timescale) -> Timeline {
        Timeline {
            unwrap: RtpTimestampUnwrapper::new(scale),
            offset: None,
            last: None,
        }
    }

    /// The frame's time; never earlier than the previous frame's (a
    /// publisher's clock that steps back is held, not followed).
    fn time(&mut self, rtp: u32, since_start: std::time::Duration) -> MediaTime {
        let t = self.unwrap.unwrap(rtp);
        let scale = t.timescale();
        let offset = *self.offset.get_or_insert_with(|| {
            MediaTime::from_duration(since_start, scale).ticks() - t.ticks()
        });
        let mut at = MediaTime::new(t.ticks().saturating_add(offset), scale);
        if let Some(last) = self.last
            && at <= last
        {
            at = MediaTime::new(last.ticks() + 1, scale);
        }
        self.last = Some(at);
        at
    }
}

/// A simulcast publisher's video is taken in at most this many layers.
pub const MAX_LAYERS: usize = 4;

/// One video track: the publisher's video, or one of its simulcast layers.
/// Each layer has its own RTP clock (its own SSRC), placed at its first
/// arrival like the audio's.
struct Layer {
    writer: AnnexBVideo,
    time: Timeline,
}

pub struct RtpIngest {
    // Fields drop in order: the tracks finish their groups before the
    // broadcast is marked interrupted.
    video: Vec<Layer>,
    audio: Option<TrackProducer>,
    broadcast: BroadcastProducer,
    started: std::time::Instant,
    audio_time: Timeline,
    stats: IngestStats,
}

impl RtpIngest {
    /// A publisher whose session began at `started`; `has_video` and
    /// `has_audio` are what its offer carries, and `layers` how many
    /// simulcast layers of video it sends (1 without simulcast; at most
    /// [`MAX_LAYERS`]). Layer 0 is the bus track `video`, the others
    /// `video1`…; with several, the broadcast is marked simulcast, so its
    /// layers are served as they come rather than transcoded.
    pub fn new(
        mut broadcast: BroadcastProducer,
        started: std::time::Instant,
        has_video: bool,
        has_audio: bool,
        encoder: Option<String>,
        layers: usize,
    ) -> RtpIngest {
        let layers = layers.clamp(1, MAX_LAYERS);
        broadcast.set_meta(BroadcastMeta {
            has_video: Some(has_video),
            has_audio: Some(has_audio),
            opus_audio: has_audio,
            encoder,
            source: Some("WebRTC"),
            simulcast: has_video && layers > 1,
            ..Default::default()
        });
        RtpIngest {
            video: (0..layers)
                .map(|i| Layer {
                    writer: AnnexBVideo::named(video_track_name(i as u8)),
                    time: Timeline::new(Timescale::MPEG),
                })
                .collect(),
            audio: None,
            broadcast,
            started,
            audio_time: Timeline::new(OPUS_CLOCK),
            stats: IngestStats::default(),
        }
    }

    pub fn broadcast(&self) -> &BroadcastProducer {
        &self.broadcast
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// The layers a keyframe is awaited on (asked for by a consumer, or
    /// wanted after lost packets), by index.
    pub fn keyframes_requested(&self) -> impl Iterator<Item = usize> + '_ {
        self.video
            .iter()
            .enumerate()
            .filter(|(_, l)| l.writer.keyframe_requested())
            .map(|(i, _)| i)
    }

    /// The layers whose group has run `max` or longer by `now` while the
    /// outputs serve them as they come (a group starts at a keyframe, and
    /// LL-HLS segments and joining viewers start at groups): the publisher
    /// should be asked for a keyframe. A layer with no keyframe yet is in
    /// [`Self::keyframes_requested`] already.
    pub fn long_groups(
        &self,
        now: std::time::Instant,
        max: std::time::Duration,
    ) -> impl Iterator<Item = usize> + '_ {
        self.video
            .iter()
            .enumerate()
            .filter(move |(_, l)| {
                l.writer
                    .last_keyframe()
                    .is_some_and(|t| now.saturating_duration_since(t) >= max)
                    && self.broadcast.passed_through(l.writer.name())
            })
            .map(|(i, _)| i)
    }

    /// Takes one frame. `contiguous` is false when packets before it were
    /// lost: video then waits for the next keyframe.
    pub fn frame(
        &mut self,
        payload: Payload<'_>,
        rtp_time: u32,
        contiguous: bool,
        at: Arrival,
    ) -> Result<Step, IngestError> {
        match payload {
            Payload::Video { codec, data, layer } => {
                self.video(codec, data, layer, rtp_time, contiguous, at)
            }
            Payload::Opus { data, channels } => Ok(Step {
                notice: self.audio(data, channels, rtp_time, at),
                need_keyframe: false,
            }),
        }
    }

    fn video(
        &mut self,
        codec: VideoCodec,
        data: &[u8],
        layer: usize,
        rtp_time: u32,
        contiguous: bool,
        at: Arrival,
    ) -> Result<Step, IngestError> {
        // The caller maps a layer's rid to its index; one it did not
        // negotiate never gets here.
        let Some(Layer { writer, time }) = self.video.get_mut(layer) else {
            return Ok(Step::default());
        };
        let since = at.instant.saturating_duration_since(self.started);
        let dts = time.time(rtp_time, since);
        let au = AccessUnit {
            codec,
            data,
            dts,
            pts: dts,
            contiguous,
            at,
        };
        writer.write(&mut self.broadcast, au, &mut self.stats)
    }

    fn audio(&mut self, data: &[u8], channels: u8, rtp_time: u32, at: Arrival) -> Option<Notice> {
        let since = at.instant.saturating_duration_since(self.started);
        let dts = self.audio_time.time(rtp_time, since);
        if data.is_empty() {
            return Some(Notice::EmptyAudioFrame);
        }
        let config = CodecConfig::Opus(OpusConfig {
            channels: channels.clamp(1, 2),
            pre_skip: 0,
            input_sample_rate: OpusConfig::CLOCK_RATE,
        });
        let broadcast = &mut self.broadcast;
        let track = self.audio.get_or_insert_with(|| {
            broadcast.track(TrackInfo::source(AUDIO_TRACK, TrackKind::Audio))
        });
        track.set_config(config);
        write_audio(
            track,
            Bytes::copy_from_slice(data),
            dts,
            at,
            &mut self.stats,
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Registry, Retention, StreamPath, TrackEvent, TryNext};
    use crate::ingest::tags::VIDEO_TRACK;

    /// x264's 320x240 SPS and PPS (the avcC of the H.264 tests).
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn h264(data: &[u8]) -> Payload<'_> {
        layer(0, data)
    }

    fn layer(layer: usize, data: &[u8]) -> Payload<'_> {
        Payload::Video {
            codec: VideoCodec::H264,
            data,
            layer,
        }
    }

    fn annexb(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    fn setup() -> (Registry, RtpIngest, Arrival) {
        let reg = Registry::new(Duration::ZERO, Retention::default());
        let b = reg.publish(StreamPath::new("app", "s").unwrap()).unwrap();
        let at = Arrival::now();
        (reg, RtpIngest::new(b, at.instant, true, true, None, 1), at)
    }

    fn later(at: Arrival, ms: u64) -> Arrival {
        Arrival {
            wallclock: at.wallclock + Duration::from_millis(ms),
            instant: at.instant + Duration::from_millis(ms),
        }
    }

    fn frames(ing: &RtpIngest, track: &str) -> Vec<crate::bus::FrameEvent> {
        let mut c = ing
            .broadcast()
            .consumer()
            .subscribe_at(track, crate::bus::StartAt::Oldest, None)
            .unwrap();
        let mut out = vec![];
        while let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() {
            out.push(f);
        }
        out
    }

    #[test]
    fn video_starts_at_an_idr_with_in_band_parameter_sets() {
        let (_reg, mut ing, at) = setup();
        // A P frame before anything: dropped, and a keyframe is wanted.
        let step = ing
            .frame(h264(&annexb(&[&[0x41, 1]])), 1000, true, at)
            .unwrap();
        assert_eq!(
            step.notice,
            Some(Notice::FrameBeforeConfig(TrackKind::Video))
        );
        assert!(step.need_keyframe);
        // The IDR with its parameter sets starts the track, as AVCC
        // without them.
        let idr = annexb(&[SPS, PPS, &[0x65, 0x88, 0x84]]);
        let step = ing.frame(h264(&idr), 4000, true, later(at, 33)).unwrap();
        assert_eq!(step, Step::default());
        let step = ing
            .frame(h264(&annexb(&[&[0x41, 2]])), 7000, true, later(at, 66))
            .unwrap();
        assert_eq!(step, Step::default());
        let got = frames(&ing, VIDEO_TRACK);
        assert_eq!(got.len(), 2);
        assert!(got[0].frame.keyframe && got[0].group_start);
        assert_eq!(&got[0].frame.data[..], &[0, 0, 0, 3, 0x65, 0x88, 0x84]);
        // The timeline starts at the arrival (33 ms into the session) and
        // follows the RTP clock from there.
        assert_eq!(got[0].frame.dts.rescale(Timescale::MILLIS).ticks(), 33);
        assert_eq!((got[1].frame.dts - got[0].frame.dts).ticks(), 3000);
        let CodecConfig::H264(c) = &*got[0].group.config else {
            panic!("not H.264")
        };
        assert_eq!((c.info.width, c.info.height), (320, 240));
    }

    #[test]
    fn loss_waits_for_the_next_idr_and_asks_for_it() {
        let (_reg, mut ing, at) = setup();
        let idr = annexb(&[SPS, PPS, &[0x65, 1]]);
        ing.frame(h264(&idr), 0, true, at).unwrap();
        let step = ing
            .frame(h264(&annexb(&[&[0x41, 2]])), 3000, false, at)
            .unwrap();
        assert_eq!(step.notice, Some(Notice::WaitingForKeyframe));
        assert!(step.need_keyframe);
        assert_eq!(ing.keyframes_requested().collect::<Vec<_>>(), [0]);
        let step = ing
            .frame(h264(&annexb(&[&[0x41, 3]])), 6000, true, at)
            .unwrap();
        assert!(step.need_keyframe);
        let step = ing
            .frame(h264(&annexb(&[&[0x65, 4]])), 9000, true, at)
            .unwrap();
        assert_eq!(step.notice, Some(Notice::KeyframeAfterDrops { dropped: 2 }));
        assert_eq!(ing.keyframes_requested().count(), 0);
        assert_eq!(frames(&ing, VIDEO_TRACK).len(), 2);
    }

    /// Simulcast: each layer is its own bus track (`video`, `video1`…),
    /// with its own RTP clock placed at its first arrival, its own wait for
    /// a keyframe, and the broadcast marked simulcast. A layer index past
    /// the negotiated ones is ignored; the count is capped.
    #[test]
    fn simulcast_layers_are_tracks_of_their_own() {
        let reg = Registry::new(Duration::ZERO, Retention::default());
        let b = reg.publish(StreamPath::new("app", "sim").unwrap()).unwrap();
        let at = Arrival::now();
        let mut ing = RtpIngest::new(b, at.instant, true, true, None, 3);
        assert!(ing.broadcast().consumer().snapshot().meta.simulcast);
        assert_eq!(ing.keyframes_requested().collect::<Vec<_>>(), [0, 1, 2]);
        let idr = annexb(&[SPS, PPS, &[0x65, 1]]);
        // Layer 2 starts first, 10 ms in; layer 0 at 12 ms, on another
        // RTP clock; layer 1 has sent nothing yet.
        ing.frame(layer(2, &idr), 777_000, true, later(at, 10))
            .unwrap();
        ing.frame(layer(0, &idr), 5, true, later(at, 12)).unwrap();
        ing.frame(layer(0, &annexb(&[&[0x41, 2]])), 3005, true, later(at, 45))
            .unwrap();
        // A P frame on layer 1 waits for its own keyframe.
        let step = ing
            .frame(layer(1, &annexb(&[&[0x41, 2]])), 9, true, later(at, 12))
            .unwrap();
        assert!(step.need_keyframe);
        assert_eq!(ing.keyframes_requested().collect::<Vec<_>>(), [1]);
        // Past the layers: nothing.
        assert_eq!(
            ing.frame(layer(3, &idr), 0, true, at).unwrap(),
            Step::default()
        );
        let top = frames(&ing, VIDEO_TRACK);
        let low = frames(&ing, "video2");
        assert_eq!((top.len(), low.len()), (2, 1));
        let tracks = ing.broadcast().consumer().snapshot().tracks;
        assert!(!tracks.iter().any(|t| t.name == "video1"), "{tracks:?}");
        let ms = |f: &crate::bus::FrameEvent| f.frame.dts.rescale(Timescale::MILLIS).ticks();
        assert_eq!((ms(&top[0]), ms(&top[1]), ms(&low[0])), (12, 45, 10));
        // Groups that run long are reported once the catalog serves their
        // layer as it came (and only then).
        let now = at.instant + Duration::from_millis(2100);
        let long = |ing: &RtpIngest| {
            ing.long_groups(now, Duration::from_secs(2))
                .collect::<Vec<_>>()
        };
        assert!(long(&ing).is_empty(), "not served as it came yet");
        let entry = |track: &str| crate::bus::VideoEntry {
            name: track.into(),
            track: track.into(),
            bitrate: 0,
            width: 320,
            height: 240,
            passthrough: true,
            webrtc_safe: true,
        };
        ing.broadcast()
            .consumer()
            .publish_catalog(crate::bus::Catalog {
                video: vec![entry(VIDEO_TRACK), entry("video2")],
                ..Default::default()
            });
        // Layer 2's keyframe came at 10 ms, layer 0's at 12 ms: both due at
        // 2.1 s; neither at 2.009 s.
        assert_eq!(long(&ing), [0, 2]);
        let soon = at.instant + Duration::from_millis(2009);
        assert_eq!(ing.long_groups(soon, Duration::from_secs(2)).count(), 0);
        // Capped: a publisher cannot make more than MAX_LAYERS tracks.
        let b = reg
            .publish(StreamPath::new("app", "many").unwrap())
            .unwrap();
        let ing = RtpIngest::new(b, at.instant, true, false, None, 100);
        assert_eq!(ing.keyframes_requested().count(), MAX_LAYERS);
    }

    #[test]
    fn a_bad_sps_is_an_error_and_garbage_is_dropped() {
        let (_reg, mut ing, at) = setup();
        let bad = annexb(&[&[0x67, 0x42], PPS, &[0x65, 1]]);
        assert!(ing.frame(h264(&bad), 0, true, at).is_err());
        // Bytes with no start code at all are no frame.
        let step = ing.frame(h264(&[0xff; 64]), 0, true, at).unwrap();
        assert!(step.need_keyframe);
        // Neither made a track.
        assert!(ing.broadcast().consumer().snapshot().tracks.is_empty());
    }

    #[test]
    fn opus_frames_are_one_group_each_on_a_48khz_timeline_across_the_wrap() {
        let (_reg, mut ing, at) = setup();
        let start = u32::MAX - 959;
        for k in 0..3u32 {
            let ts = start.wrapping_add(k * 960);
            let step = ing
                .frame(
                    Payload::Opus {
                        data: &[0xfc, k as u8],
                        channels: 2,
                    },
                    ts,
                    true,
                    later(at, 20 * u64::from(k)),
                )
                .unwrap();
            assert_eq!(step, Step::default());
        }
        let got = frames(&ing, AUDIO_TRACK);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|f| f.group_start));
        assert_eq!((got[2].frame.dts - got[0].frame.dts).ticks(), 1920);
        assert_eq!(got[0].frame.dts.timescale().hz(), 48_000);
        assert!(matches!(&*got[0].group.config, CodecConfig::Opus(o) if o.channels == 2));
        assert!(ing.broadcast().consumer().snapshot().meta.opus_audio);
    }

    #[test]
    fn a_clock_that_steps_back_is_held() {
        let (_reg, mut ing, at) = setup();
        let opus = |d: &'static [u8]| Payload::Opus {
            data: d,
            channels: 2,
        };
        ing.frame(opus(&[1]), 96_000, true, at).unwrap();
        ing.frame(opus(&[2]), 48_000, true, at).unwrap();
        let got = frames(&ing, AUDIO_TRACK);
        assert!(got[1].frame.dts > got[0].frame.dts);
    }
}
