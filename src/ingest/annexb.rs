//! H.264 and HEVC access units in Annex B, with their parameter sets in
//! band, onto a bus video track: what WHIP (RTP) and SRT (MPEG-TS)
//! publishers send. AV1 temporal units (OBUs, the sequence header in band,
//! as WebRTC carries them) take the same path.
//!
//! Sans-IO. The caller has already placed each access unit on the media
//! timeline; this owns the rest:
//! - the parameter sets (SPS and PPS; and VPS for HEVC) set (or change)
//!   the track's configuration, and frames go on the bus length-prefixed
//!   with them taken out;
//! - video starts, and restarts after lost data, at a keyframe (an IDR; an
//!   IRAP picture for HEVC), and the caller is told to ask for one where
//!   it can ([`Step::need_keyframe`]).

use bytes::Bytes;

use crate::bus::{BroadcastProducer, Frame, TrackInfo, TrackKind, TrackProducer};
use crate::ingest::tags::{Arrival, IngestError, IngestStats, Notice, VIDEO_TRACK};
use crate::media::h264::{self, annexb_nalus};
use crate::media::{Av1Config, AvcConfig, CodecConfig, HevcConfig, VideoCodec, av1, hevc};
use crate::time::MediaTime;

/// What handling a frame asks of the caller.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub notice: Option<Notice>,
    /// Video waits for a keyframe: ask the publisher (PLI), if it can be.
    pub need_keyframe: bool,
}

/// One video track of a publisher whose H.264 arrives in Annex B.
pub struct AnnexBVideo {
    /// The bus track it writes: `video`, or `video1`… for a simulcast
    /// publisher's other layers.
    name: String,
    track: Option<TrackProducer>,
    need_keyframe: bool,
    dropped_waiting: u64,
    /// When the last keyframe written arrived.
    last_keyframe: Option<std::time::Instant>,
}

/// One access unit, placed on the timeline.
#[derive(Clone, Copy, Debug)]
pub struct AccessUnit<'a> {
    /// H.264 or HEVC.
    pub codec: VideoCodec,
    pub data: &'a [u8],
    pub dts: MediaTime,
    pub pts: MediaTime,
    /// False when data before it was lost: video waits for the next IDR.
    pub contiguous: bool,
    pub at: Arrival,
}

impl Default for AnnexBVideo {
    fn default() -> Self {
        AnnexBVideo::named(VIDEO_TRACK.to_owned())
    }
}

impl AnnexBVideo {
    /// A writer of the bus track `name`.
    pub fn named(name: String) -> AnnexBVideo {
        AnnexBVideo {
            name,
            track: None,
            need_keyframe: true,
            dropped_waiting: 0,
            last_keyframe: None,
        }
    }

    /// The bus track it writes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the last keyframe written arrived; None before the first.
    pub fn last_keyframe(&self) -> Option<std::time::Instant> {
        self.last_keyframe
    }

    /// Whether a keyframe is awaited, by this writer or by a consumer.
    pub fn keyframe_requested(&self) -> bool {
        self.need_keyframe || self.track.as_ref().is_some_and(|v| v.keyframe_requested())
    }

    pub fn write(
        &mut self,
        broadcast: &mut BroadcastProducer,
        au: AccessUnit<'_>,
        stats: &mut IngestStats,
    ) -> Result<Step, IngestError> {
        let nalus = match au.codec {
            VideoCodec::Av1 => Vec::new(),
            _ => annexb_nalus(au.data),
        };
        let mut notice = self.parameter_sets(broadcast, au.codec, au.data, &nalus)?;
        let keyframe = match au.codec {
            VideoCodec::Av1 => {
                let reduced = self.track.as_ref().and_then(|t| t.config()).is_some_and(
                    |c| matches!(&**c, CodecConfig::Av1(a) if a.reduced_still_picture_header),
                );
                av1::is_key_frame(au.data, reduced)
            }
            VideoCodec::Hevc => nalus
                .iter()
                .any(|n| hevc::nal_type(n).is_some_and(hevc::is_irap)),
            VideoCodec::H264 => nalus
                .iter()
                .any(|n| h264::nal_type(n) == Some(h264::NAL_IDR)),
        };
        if !au.contiguous && !keyframe {
            self.need_keyframe = true;
        }
        // No configuration yet, or one of another codec (a PMT that changed
        // the stream type): wait for this codec's parameter sets.
        let Some(track) = self
            .track
            .as_mut()
            .filter(|t| t.config().and_then(|c| c.video_codec()) == Some(au.codec))
        else {
            stats.dropped_frames += 1;
            self.need_keyframe = true;
            return Ok(Step {
                notice: notice.or(Some(Notice::FrameBeforeConfig(TrackKind::Video))),
                need_keyframe: true,
            });
        };
        if self.need_keyframe && !keyframe {
            stats.dropped_frames += 1;
            self.dropped_waiting += 1;
            return Ok(Step {
                notice: notice
                    .or((self.dropped_waiting == 1).then_some(Notice::WaitingForKeyframe)),
                need_keyframe: true,
            });
        }
        let data = match au.codec {
            VideoCodec::Hevc => Bytes::from(hevc::annexb_to_hvcc(au.data)),
            VideoCodec::H264 => Bytes::from(h264::annexb_to_avcc(au.data)),
            VideoCodec::Av1 => match av1::check_frame(Bytes::copy_from_slice(au.data)) {
                Ok(data) => data,
                Err(e) => {
                    stats.corrupt_frames += 1;
                    self.need_keyframe = true;
                    return Ok(Step {
                        notice: Some(Notice::CorruptFrame(e.into())),
                        need_keyframe: true,
                    });
                }
            },
        };
        if data.is_empty() {
            // Parameter sets alone: nothing to show.
            return Ok(Step {
                notice,
                need_keyframe: false,
            });
        }
        let frame = Frame {
            dts: au.dts,
            pts: au.pts.max(au.dts),
            keyframe,
            data,
            wallclock: au.at.wallclock,
            received: au.at.instant,
        };
        if track.write(frame, keyframe).is_err() {
            stats.dropped_frames += 1;
            return Ok(Step {
                notice,
                need_keyframe: true,
            });
        }
        stats.video_frames += 1;
        if keyframe {
            self.last_keyframe = Some(au.at.instant);
        }
        if keyframe && self.need_keyframe {
            self.need_keyframe = false;
            if self.dropped_waiting > 0 {
                notice = notice.or(Some(Notice::KeyframeAfterDrops {
                    dropped: std::mem::take(&mut self.dropped_waiting),
                }));
            }
        }
        Ok(Step {
            notice,
            need_keyframe: false,
        })
    }

    /// Applies the parameter sets in the access unit, when they are new.
    fn parameter_sets(
        &mut self,
        broadcast: &mut BroadcastProducer,
        codec: VideoCodec,
        data: &[u8],
        nalus: &[&[u8]],
    ) -> Result<Option<Notice>, IngestError> {
        let of = |t: u8| -> Vec<&[u8]> {
            nalus
                .iter()
                .copied()
                .filter(|n| match codec {
                    VideoCodec::Hevc => hevc::nal_type(n) == Some(t),
                    _ => h264::nal_type(n) == Some(t),
                })
                .collect()
        };
        let current = self.track.as_ref().and_then(|t| t.config().cloned());
        let config = match codec {
            VideoCodec::H264 => {
                let (sps, pps) = (of(h264::NAL_SPS), of(h264::NAL_PPS));
                if sps.is_empty() || pps.is_empty() {
                    return Ok(None);
                }
                let config = AvcConfig::from_parameter_sets(&sps, &pps)?;
                if current.as_deref().is_some_and(|c| {
                    matches!(c, CodecConfig::H264(a) if a.sps == config.sps && a.pps == config.pps)
                }) {
                    return Ok(None);
                }
                CodecConfig::H264(config)
            }
            VideoCodec::Hevc => {
                let (vps, sps, pps) = (of(hevc::NAL_VPS), of(hevc::NAL_SPS), of(hevc::NAL_PPS));
                if vps.is_empty() || sps.is_empty() || pps.is_empty() {
                    return Ok(None);
                }
                if current.as_deref().is_some_and(|c| {
                    matches!(c, CodecConfig::Hevc(h)
                        if [(hevc::NAL_VPS, &vps), (hevc::NAL_SPS, &sps), (hevc::NAL_PPS, &pps)]
                            .iter()
                            .all(|(t, sets)| h.parameter_sets(*t).map(|b| &b[..]).eq(sets.iter().copied())))
                }) {
                    return Ok(None);
                }
                CodecConfig::Hevc(HevcConfig::from_parameter_sets(&vps, &sps, &pps)?)
            }
            VideoCodec::Av1 => {
                let Some(obu) = av1::sequence_header_obu(data) else {
                    return Ok(None);
                };
                if current
                    .as_deref()
                    .is_some_and(|c| matches!(c, CodecConfig::Av1(a) if a.config_obus[..] == *obu))
                {
                    return Ok(None);
                }
                CodecConfig::Av1(Av1Config::from_sequence_header(obu)?)
            }
        };
        let (width, height) = config.video_size().unwrap_or_default();
        let description = format!("{} {width}x{height}", config.codec_string());
        let track = self.track.get_or_insert_with(|| {
            broadcast.track(TrackInfo::source(&self.name, TrackKind::Video))
        });
        track.set_config(config);
        self.need_keyframe = true;
        Ok(current.is_some().then_some(Notice::ConfigChanged {
            kind: TrackKind::Video,
            description,
        }))
    }
}
