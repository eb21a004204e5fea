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
use crate::ingest::tags::{AUDIO_TRACK, Arrival, IngestError, IngestStats, Notice, write_audio};
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
    /// An access unit: H.264 or HEVC in Annex B, or an AV1 temporal unit.
    Video { codec: VideoCodec, data: &'a [u8] },
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

pub struct RtpIngest {
    // Fields drop in order: the tracks finish their groups before the
    // broadcast is marked interrupted.
    video: AnnexBVideo,
    audio: Option<TrackProducer>,
    broadcast: BroadcastProducer,
    started: std::time::Instant,
    video_time: Timeline,
    audio_time: Timeline,
    stats: IngestStats,
}

impl RtpIngest {
    /// A publisher whose session began at `started`; `has_video` and
    /// `has_audio` are what its offer carries.
    pub fn new(
        mut broadcast: BroadcastProducer,
        started: std::time::Instant,
        has_video: bool,
        has_audio: bool,
        encoder: Option<String>,
    ) -> RtpIngest {
        broadcast.set_meta(BroadcastMeta {
            has_video: Some(has_video),
            has_audio: Some(has_audio),
            opus_audio: has_audio,
            encoder,
            source: Some("WebRTC"),
            ..Default::default()
        });
        RtpIngest {
            video: AnnexBVideo::default(),
            audio: None,
            broadcast,
            started,
            video_time: Timeline::new(Timescale::MPEG),
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

    /// A consumer asked for a keyframe that has not come yet.
    pub fn keyframe_requested(&self) -> bool {
        self.video.keyframe_requested()
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
            Payload::Video { codec, data } => self.video(codec, data, rtp_time, contiguous, at),
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
        rtp_time: u32,
        contiguous: bool,
        at: Arrival,
    ) -> Result<Step, IngestError> {
        let since = at.instant.saturating_duration_since(self.started);
        let dts = self.video_time.time(rtp_time, since);
        let au = AccessUnit {
            codec,
            data,
            dts,
            pts: dts,
            contiguous,
            at,
        };
        self.video.write(&mut self.broadcast, au, &mut self.stats)
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
        Payload::Video {
            codec: VideoCodec::H264,
            data,
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
        (reg, RtpIngest::new(b, at.instant, true, true, None), at)
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
        assert!(step.need_keyframe && ing.keyframe_requested());
        let step = ing
            .frame(h264(&annexb(&[&[0x41, 3]])), 6000, true, at)
            .unwrap();
        assert!(step.need_keyframe);
        let step = ing
            .frame(h264(&annexb(&[&[0x65, 4]])), 9000, true, at)
            .unwrap();
        assert_eq!(step.notice, Some(Notice::KeyframeAfterDrops { dropped: 2 }));
        assert!(!ing.keyframe_requested());
        assert_eq!(frames(&ing, VIDEO_TRACK).len(), 2);
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
