//! From FLV tags to bus frames, for one publisher.
//!
//! Sans-IO: the caller passes each tag's payload, its RTMP timestamp and the
//! time it arrived; this turns them into frames on the broadcast's tracks.
//! It owns the decisions a publisher's stream needs:
//! - 32-bit millisecond timestamps are unwrapped; PTS = DTS + composition offset;
//! - nothing is published before a sequence header, and video starts (and
//!   restarts after a corrupt frame) at a keyframe;
//! - every video frame's NAL lengths are checked before it goes on the bus;
//! - a new sequence header with different parameters starts a new group.
//!
//! Fatal problems (an undecodable sequence header, an unsupported codec) are
//! [`IngestError`]s: the connection should close. Recoverable ones are
//! [`Notice`]s for the log.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::flv::{self, AudioTag, FlvError, VideoCodec, VideoTag};
use crate::bus::{
    BroadcastMeta, BroadcastProducer, Frame, StreamPath, TrackInfo, TrackKind, TrackProducer,
};
use crate::media::{
    AacConfig, AacError, Av1Config, Av1Error, AvcConfig, CodecConfig, H264Error, HevcConfig,
    HevcError, av1, h264::Nalus,
};
use crate::ratelimit::LogLimiter;
use crate::time::{MediaTime, RtmpTimestampUnwrapper};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error("bad AVC sequence header: {0}")]
    Avc(#[from] H264Error),
    #[error("bad HEVC sequence header: {0}")]
    Hevc(#[from] HevcError),
    #[error("bad AV1 sequence header: {0}")]
    Av1(#[from] Av1Error),
    #[error("bad AAC sequence header: {0}")]
    Aac(#[from] AacError),
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Something worth a log line that does not end the stream.
#[derive(Debug, PartialEq)]
pub enum Notice {
    /// A frame arrived before its track's sequence header and was dropped.
    FrameBeforeConfig(TrackKind),
    /// Video frames are being dropped until a keyframe arrives.
    WaitingForKeyframe,
    /// A keyframe arrived after `dropped` frames were discarded waiting for it.
    KeyframeAfterDrops { dropped: u64 },
    /// A video frame's NAL units or OBUs lie about their lengths, or its
    /// codec is not its sequence header's; it was dropped and video
    /// resumes at the next keyframe.
    CorruptFrame(FrameError),
    /// A new sequence header changed the track's parameters.
    ConfigChanged {
        kind: TrackKind,
        description: String,
    },
    /// An empty audio frame was ignored.
    EmptyAudioFrame,
    /// A multitrack publisher's video track (not track 0) cannot be taken:
    /// it is dropped, and the other tracks go on.
    TrackRefused { id: u8, why: String },
}

impl Notice {
    /// Logs the notice for `stream`, as every ingest protocol words it;
    /// the ones a damaged stream repeats go through `limiter`.
    pub fn log(self, stream: &StreamPath, limiter: &mut LogLimiter, now: Instant) {
        match self {
            Notice::FrameBeforeConfig(kind) => {
                if let Some(suppressed) = limiter.check(now) {
                    tracing::warn!(%stream, kind = kind.as_str(), suppressed, "dropping frames sent before their sequence header");
                }
            }
            Notice::WaitingForKeyframe => {
                tracing::info!(%stream, "video does not start with a keyframe: dropping frames until one arrives")
            }
            Notice::KeyframeAfterDrops { dropped } => {
                tracing::info!(%stream, dropped, "keyframe arrived; video starts here")
            }
            Notice::CorruptFrame(e) => {
                if let Some(suppressed) = limiter.check(now) {
                    tracing::warn!(%stream, error = %e, suppressed, "dropped a corrupt video frame; resuming at the next keyframe");
                }
            }
            Notice::ConfigChanged { kind, description } => {
                tracing::info!(%stream, kind = kind.as_str(), %description, "codec parameters changed")
            }
            Notice::EmptyAudioFrame => {}
            Notice::TrackRefused { id, why } => {
                tracing::warn!(%stream, track = id, %why, "dropping a video track of this multitrack publisher")
            }
        }
    }
}

/// Why a video frame was dropped.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Nal(#[from] H264Error),
    #[error(transparent)]
    Obu(#[from] Av1Error),
    #[error("a {frame:?} frame arrived on a {config} track")]
    CodecMismatch {
        config: &'static str,
        frame: VideoCodec,
    },
}

/// The arrival time of a tag, read once by the caller.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub wallclock: SystemTime,
    pub instant: Instant,
}

impl Arrival {
    pub fn now() -> Arrival {
        Arrival {
            wallclock: SystemTime::now(),
            instant: Instant::now(),
        }
    }
}

/// Counters for one publisher session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub video_frames: u64,
    pub audio_frames: u64,
    pub dropped_frames: u64,
    pub corrupt_frames: u64,
}

pub struct TagIngest {
    // Fields drop in order: the tracks finish their groups before the
    // broadcast is marked interrupted (which lets a new publisher in).
    videos: Vec<VideoTrack>,
    audio: Option<TrackProducer>,
    broadcast: BroadcastProducer,
    /// One clock for every video track: they share the message's timestamp.
    video_clock: RtmpTimestampUnwrapper,
    audio_clock: RtmpTimestampUnwrapper,
    stats: IngestStats,
}

/// One of the publisher's video tracks: track 0, or another rendition of
/// an Enhanced RTMP multitrack publisher.
struct VideoTrack {
    id: u8,
    producer: Option<TrackProducer>,
    /// Dropped until a keyframe (at start, after a corrupt frame or new
    /// parameters).
    need_keyframe: bool,
    dropped_waiting: u64,
    /// A track other than 0 that cannot be taken: its frames are dropped.
    refused: bool,
}

pub const VIDEO_TRACK: &str = crate::bus::SOURCE_VIDEO;
pub const AUDIO_TRACK: &str = "audio";

/// The bus track of a publisher's video track `id`: `video` for track 0,
/// `video1`… for the renditions of a multitrack publisher.
pub fn video_track_name(id: u8) -> String {
    if id == 0 {
        VIDEO_TRACK.to_owned()
    } else {
        format!("{VIDEO_TRACK}{id}")
    }
}

impl TagIngest {
    pub fn new(broadcast: BroadcastProducer) -> TagIngest {
        TagIngest {
            broadcast,
            videos: Vec::new(),
            audio: None,
            video_clock: RtmpTimestampUnwrapper::new(),
            audio_clock: RtmpTimestampUnwrapper::new(),
            stats: IngestStats::default(),
        }
    }

    pub fn broadcast(&self) -> &BroadcastProducer {
        &self.broadcast
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    pub fn metadata(&mut self, meta: BroadcastMeta) {
        self.broadcast.set_meta(meta);
    }

    /// A video message: one tag, or one per track of a multitrack packet.
    /// Returns the first notice worth logging.
    pub fn video(
        &mut self,
        payload: Bytes,
        rtmp_ts: u32,
        at: Arrival,
    ) -> Result<Option<Notice>, IngestError> {
        let mut dts = None;
        let mut notice = None;
        for (id, tag) in flv::parse_video(payload)? {
            let n = self.video_tag(id, tag, rtmp_ts, &mut dts, at)?;
            notice = notice.or(n);
        }
        Ok(notice)
    }

    /// The index of video track `id`, made on first use (ids are bounded
    /// by [`flv::MAX_TRACK`]).
    fn video_slot(&mut self, id: u8) -> usize {
        if let Some(i) = self.videos.iter().position(|v| v.id == id) {
            return i;
        }
        self.videos.push(VideoTrack {
            id,
            producer: None,
            need_keyframe: true,
            dropped_waiting: 0,
            refused: false,
        });
        self.videos.len() - 1
    }

    fn video_tag(
        &mut self,
        id: u8,
        tag: VideoTag,
        rtmp_ts: u32,
        dts: &mut Option<MediaTime>,
        at: Arrival,
    ) -> Result<Option<Notice>, IngestError> {
        let slot = self.video_slot(id);
        if self.videos[slot].refused {
            if matches!(tag, VideoTag::Frame { .. }) {
                self.stats.dropped_frames += 1;
            }
            return Ok(None);
        }
        let refuse = |v: &mut VideoTrack, why: String| {
            v.refused = true;
            Ok(Some(Notice::TrackRefused { id, why }))
        };
        match tag {
            VideoTag::Refused(e) => refuse(&mut self.videos[slot], e.to_string()),
            VideoTag::SequenceHeader(codec, raw) => {
                let parsed: Result<CodecConfig, IngestError> = match codec {
                    VideoCodec::H264 => AvcConfig::parse(raw)
                        .map(CodecConfig::H264)
                        .map_err(Into::into),
                    VideoCodec::Hevc => HevcConfig::parse(raw)
                        .map(CodecConfig::Hevc)
                        .map_err(Into::into),
                    VideoCodec::Av1 => Av1Config::parse(raw)
                        .map(CodecConfig::Av1)
                        .map_err(Into::into),
                };
                let config = match parsed {
                    Ok(c) => c,
                    // Only the default track's bad record ends the stream.
                    Err(e) if id != 0 => return refuse(&mut self.videos[slot], e.to_string()),
                    Err(e) => return Err(e),
                };
                let (width, height) = config.video_size().unwrap_or_default();
                let description = format!("{} {width}x{height}", config.codec_string());
                let v = &mut self.videos[slot];
                let notice = set_config(
                    &mut v.producer,
                    &mut self.broadcast,
                    TrackInfo::source(&video_track_name(id), TrackKind::Video),
                    config,
                    description,
                );
                if notice.is_some() {
                    // The new parameters apply from the next keyframe.
                    v.need_keyframe = true;
                }
                Ok(notice)
            }
            VideoTag::Frame {
                codec,
                keyframe,
                cts_ms,
                data,
            } => {
                let dts = *dts.get_or_insert_with(|| self.video_clock.unwrap(rtmp_ts));
                let v = &mut self.videos[slot];
                let Some(track) = v.producer.as_mut() else {
                    self.stats.dropped_frames += 1;
                    return Ok(Some(Notice::FrameBeforeConfig(TrackKind::Video)));
                };
                let config = track
                    .config()
                    .expect("the video track gets its config when it is created");
                let data = match check_frame(config, codec, data) {
                    Ok(data) => data,
                    Err(e) => {
                        self.stats.corrupt_frames += 1;
                        v.need_keyframe = true;
                        return Ok(Some(Notice::CorruptFrame(e)));
                    }
                };
                if v.need_keyframe && !keyframe {
                    self.stats.dropped_frames += 1;
                    v.dropped_waiting += 1;
                    return Ok((v.dropped_waiting == 1).then_some(Notice::WaitingForKeyframe));
                }
                let frame = Frame {
                    dts,
                    pts: dts + MediaTime::from_millis(i64::from(cts_ms)),
                    keyframe,
                    data,
                    wallclock: at.wallclock,
                    received: at.instant,
                };
                // The checks above make the write's preconditions hold: a
                // config is set and a new group starts at a keyframe.
                if track.write(frame, keyframe).is_err() {
                    self.stats.dropped_frames += 1;
                    return Ok(None);
                }
                self.stats.video_frames += 1;
                let mut notice = None;
                if v.need_keyframe {
                    v.need_keyframe = false;
                    if v.dropped_waiting > 0 {
                        notice = Some(Notice::KeyframeAfterDrops {
                            dropped: std::mem::take(&mut v.dropped_waiting),
                        });
                    }
                }
                Ok(notice)
            }
            VideoTag::EndOfSequence | VideoTag::Ignored => Ok(None),
        }
    }

    pub fn audio(
        &mut self,
        payload: Bytes,
        rtmp_ts: u32,
        at: Arrival,
    ) -> Result<Option<Notice>, IngestError> {
        match flv::parse_audio(payload)? {
            AudioTag::SequenceHeader(raw) => {
                let config = AacConfig::parse(raw)?;
                let description = format!(
                    "{} {} Hz {} ch",
                    config.codec_string(),
                    config.sample_rate,
                    config.channels
                );
                Ok(set_config(
                    &mut self.audio,
                    &mut self.broadcast,
                    TrackInfo::source(AUDIO_TRACK, TrackKind::Audio),
                    CodecConfig::Aac(config),
                    description,
                ))
            }
            AudioTag::Frame(data) => {
                let dts = self.audio_clock.unwrap(rtmp_ts);
                let Some(track) = self.audio.as_mut() else {
                    self.stats.dropped_frames += 1;
                    return Ok(Some(Notice::FrameBeforeConfig(TrackKind::Audio)));
                };
                if data.is_empty() {
                    return Ok(Some(Notice::EmptyAudioFrame));
                }
                write_audio(track, data, dts, at, &mut self.stats);
                Ok(None)
            }
            AudioTag::Ignored => Ok(None),
        }
    }
}

/// Writes one audio frame at `time`, counting it. Every audio frame is its
/// own group: a late joiner starts at the newest frame.
pub(crate) fn write_audio(
    track: &mut TrackProducer,
    data: Bytes,
    time: MediaTime,
    at: Arrival,
    stats: &mut IngestStats,
) {
    let frame = Frame {
        dts: time,
        pts: time,
        keyframe: true,
        data,
        wallclock: at.wallclock,
        received: at.instant,
    };
    if track.write(frame, true).is_err() {
        stats.dropped_frames += 1;
    } else {
        stats.audio_frames += 1;
    }
}

/// Checks a video frame against its track's configuration: the same codec,
/// and NAL unit lengths (H.264, HEVC) or OBU sizes (AV1) that hold. Returns
/// the frame as it goes on the bus (an AV1 frame without its temporal
/// delimiter).
fn check_frame(config: &CodecConfig, codec: VideoCodec, data: Bytes) -> Result<Bytes, FrameError> {
    let nal_length_size = match (config, codec) {
        (CodecConfig::H264(c), VideoCodec::H264) => c.nal_length_size,
        (CodecConfig::Hevc(c), VideoCodec::Hevc) => c.nal_length_size,
        (CodecConfig::Av1(_), VideoCodec::Av1) => return Ok(av1::check_frame(data)?),
        _ => {
            return Err(FrameError::CodecMismatch {
                config: config.name(),
                frame: codec,
            });
        }
    };
    if let Some(Err(e)) = Nalus::new(&data, nal_length_size).find(|n| n.is_err()) {
        return Err(e.into());
    }
    Ok(data)
}

/// Applies a sequence header: creates the track on the first one, and says
/// when a later one changes the parameters.
fn set_config(
    slot: &mut Option<TrackProducer>,
    broadcast: &mut BroadcastProducer,
    info: TrackInfo,
    config: CodecConfig,
    description: String,
) -> Option<Notice> {
    let kind = info.kind;
    let track = slot.get_or_insert_with(|| broadcast.track(info));
    let changed = track.config().is_some_and(|c| **c != config);
    track.set_config(config);
    changed.then_some(Notice::ConfigChanged { kind, description })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::{Registry, Retention, StreamPath, TrackEvent, TryNext};
    use crate::media::h264::tests::AVCC_320X240;

    fn setup() -> (Registry, TagIngest) {
        let reg = Registry::new(Duration::ZERO, Retention::default());
        let b = reg.publish(StreamPath::new("app", "s").unwrap()).unwrap();
        (reg, TagIngest::new(b))
    }

    fn seq_header() -> Bytes {
        let mut v = vec![0x17, 0, 0, 0, 0];
        v.extend_from_slice(AVCC_320X240);
        Bytes::from(v)
    }

    fn video_frame(keyframe: bool, cts: u8, nal: &[u8]) -> Bytes {
        let mut v = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, cts];
        v.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        v.extend_from_slice(nal);
        Bytes::from(v)
    }

    fn read_all(ingest: &TagIngest, track: &str) -> Vec<crate::bus::FrameEvent> {
        let mut c = ingest
            .broadcast()
            .consumer()
            .subscribe(track, None)
            .unwrap();
        let mut out = vec![];
        while let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() {
            out.push(f);
        }
        out
    }

    #[test]
    fn starts_at_keyframe_with_composition_offsets() {
        let (_reg, mut ing) = setup();
        let at = Arrival::now();
        assert_eq!(
            ing.video(video_frame(true, 0, &[0x65]), 0, at).unwrap(),
            Some(Notice::FrameBeforeConfig(TrackKind::Video))
        );
        assert_eq!(ing.video(seq_header(), 0, at).unwrap(), None);
        assert_eq!(
            ing.video(video_frame(false, 0, &[0x41]), 10, at).unwrap(),
            Some(Notice::WaitingForKeyframe)
        );
        assert_eq!(
            ing.video(video_frame(false, 0, &[0x41]), 20, at).unwrap(),
            None
        );
        assert_eq!(
            ing.video(video_frame(true, 66, &[0x65]), 33, at).unwrap(),
            Some(Notice::KeyframeAfterDrops { dropped: 2 })
        );
        ing.video(video_frame(false, 100, &[0x41]), 66, at).unwrap();
        let frames = read_all(&ing, VIDEO_TRACK);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].frame.dts, MediaTime::from_millis(33));
        assert_eq!(frames[0].frame.pts, MediaTime::from_millis(99));
        assert_eq!(frames[1].frame.pts, MediaTime::from_millis(166));
        assert_eq!(ing.stats().dropped_frames, 3);
    }

    #[test]
    fn a_multitrack_track_streamd_cannot_take_costs_only_itself() {
        let (_reg, mut ing) = setup();
        let at = Arrival::now();
        // SequenceStart, many codecs: track 0 avc1, track 1 hvc1 with a
        // truncated hvcC, track 2 vp09.
        let mut v = vec![0x96, 0x20];
        let mut track = |fourcc: &[u8], id: u8, body: &[u8]| {
            v.extend_from_slice(fourcc);
            v.push(id);
            v.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            v.extend_from_slice(body);
        };
        track(b"avc1", 0, AVCC_320X240);
        track(b"hvc1", 1, &[1, 2, 3]);
        track(b"vp09", 2, &[0]);
        let mut notices = Vec::new();
        for (id, tag) in flv::parse_video(Bytes::from(v)).unwrap() {
            let mut dts = None;
            notices.push(ing.video_tag(id, tag, 0, &mut dts, at).unwrap());
        }
        assert!(notices[0].is_none());
        assert!(
            matches!(&notices[1], Some(Notice::TrackRefused { id: 1, why }) if why.contains("HEVC"))
        );
        assert!(
            matches!(&notices[2], Some(Notice::TrackRefused { id: 2, why }) if why.contains("vp09"))
        );
        // Track 0 plays on; frames of the refused tracks are dropped quietly.
        ing.video(video_frame(true, 0, &[0x65]), 0, at).unwrap();
        let mut f = vec![0x91, b'h', b'v', b'c', b'1', 0, 0, 0];
        f.extend_from_slice(&[0, 0, 0, 1, 0x26]);
        let mut multi = vec![0x96, 0x11, b'h', b'v', b'c', b'1', 1];
        multi.extend_from_slice(&(f.len() as u32 - 5).to_be_bytes()[1..]);
        multi.extend_from_slice(&f[5..]);
        assert_eq!(ing.video(Bytes::from(multi), 33, at).unwrap(), None);
        assert_eq!(read_all(&ing, VIDEO_TRACK).len(), 1);
        assert!(
            ing.broadcast()
                .consumer()
                .subscribe("video1", None)
                .is_none()
        );
    }

    #[test]
    fn corrupt_frame_is_dropped_and_video_resumes_at_keyframe() {
        let (_reg, mut ing) = setup();
        let at = Arrival::now();
        ing.video(seq_header(), 0, at).unwrap();
        ing.video(video_frame(true, 0, &[0x65]), 0, at).unwrap();
        let mut lying = video_frame(false, 0, &[0x41]).to_vec();
        lying[8] = 200; // NAL length 200, 1 byte present
        assert!(matches!(
            ing.video(Bytes::from(lying), 33, at).unwrap(),
            Some(Notice::CorruptFrame(FrameError::Nal(
                H264Error::NalLength { claimed: 200, .. }
            )))
        ));
        assert_eq!(
            ing.video(video_frame(false, 0, &[0x41]), 66, at).unwrap(),
            Some(Notice::WaitingForKeyframe)
        );
        ing.video(video_frame(true, 0, &[0x65]), 99, at).unwrap();
        let frames = read_all(&ing, VIDEO_TRACK);
        let dts: Vec<_> = frames.iter().map(|f| f.frame.dts.ticks()).collect();
        // A late joiner starts at the newest keyframe.
        assert_eq!(dts, vec![99]);
        assert_eq!(ing.stats().corrupt_frames, 1);
    }

    #[test]
    fn lying_sequence_header_is_fatal() {
        let (_reg, mut ing) = setup();
        let mut bad = seq_header().to_vec();
        bad[5 + 7] = 0xff; // SPS length
        assert!(matches!(
            ing.video(Bytes::from(bad), 0, Arrival::now()),
            Err(IngestError::Avc(H264Error::AvccParameterSetLength { .. }))
        ));
        assert!(matches!(
            ing.audio(
                Bytes::from_static(&[0xaf, 0, 0x16, 0x90]),
                0,
                Arrival::now()
            ),
            Err(IngestError::Aac(AacError::SampleRateIndex(13)))
        ));
    }

    #[test]
    fn audio_frames_and_timestamp_wrap() {
        let (_reg, mut ing) = setup();
        let at = Arrival::now();
        assert_eq!(
            ing.audio(Bytes::from_static(&[0xaf, 1, 1]), u32::MAX - 45, at)
                .unwrap(),
            Some(Notice::FrameBeforeConfig(TrackKind::Audio))
        );
        ing.audio(Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), 0, at)
            .unwrap();
        ing.audio(Bytes::from_static(&[0xaf, 1, 1]), u32::MAX - 22, at)
            .unwrap();
        ing.audio(Bytes::from_static(&[0xaf, 1, 2]), 0, at).unwrap();
        ing.audio(Bytes::from_static(&[0xaf, 1, 3]), 23, at)
            .unwrap();
        let mut c = ing
            .broadcast()
            .consumer()
            .subscribe(AUDIO_TRACK, None)
            .unwrap();
        // Late joiner: the newest audio frame only.
        let TryNext::Event(TrackEvent::Frame(f)) = c.try_next() else {
            panic!()
        };
        assert_eq!(f.frame.dts.ticks(), i64::from(u32::MAX) + 24);
        assert_eq!(ing.stats().audio_frames, 3);
    }
}
