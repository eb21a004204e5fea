//! FLV audio and video tag bodies, as RTMP carries them (E.4.2.1/E.4.3.1 of
//! the FLV spec), and Enhanced RTMP's (v2) FourCC headers: `avc1`, `hvc1`
//! and `av01` video, `mp4a` audio, with their modifier extensions and
//! multitrack packets.
//!
//! Sans-IO: bytes in, a typed tag out, or an [`FlvError`] saying what is wrong.
//! Payload slices share the input buffer (no copies).

use bytes::Bytes;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("{what} tag is {got} bytes, shorter than its {need}-byte header")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("video codec id {0} is not supported (streamd ingests H.264, HEVC and AV1)")]
    VideoCodec(u8),
    #[error(
        "Enhanced RTMP video codec {0:?} is not supported (streamd ingests avc1, hvc1 and av01)"
    )]
    VideoFourCc(String),
    #[error("audio format {0} ({1}) is not supported (streamd ingests AAC)")]
    AudioFormat(u8, &'static str),
    #[error("Enhanced RTMP audio codec {0:?} is not supported (streamd ingests mp4a)")]
    AudioFourCc(String),
    #[error("unknown AVC packet type {0}")]
    AvcPacketType(u8),
    #[error("Enhanced RTMP {0} packet type {1} is not supported")]
    ExPacketType(&'static str, u8),
    #[error("Enhanced RTMP multitrack type {0} is not defined")]
    MultitrackType(u8),
    #[error("unknown AAC packet type {0}")]
    AacPacketType(u8),
}

pub use crate::media::VideoCodec;

fn video_codec(fourcc: &[u8]) -> Result<VideoCodec, FlvError> {
    match fourcc {
        b"avc1" => Ok(VideoCodec::H264),
        b"hvc1" => Ok(VideoCodec::Hevc),
        b"av01" => Ok(VideoCodec::Av1),
        other => Err(FlvError::VideoFourCc(fourcc_string(other))),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// The codec's configuration record (avcC, hvcC or av1C).
    SequenceHeader(VideoCodec, Bytes),
    /// One access unit: length-prefixed NAL units (H.264, HEVC) or OBUs (AV1).
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        /// Composition time offset (PTS - DTS) in milliseconds.
        cts_ms: i32,
        data: Bytes,
    },
    EndOfSequence,
    /// Video info/command frames (frame type 5), metadata and empty
    /// payloads, which carry no picture.
    Ignored,
    /// A multitrack packet's track other than 0 that streamd cannot take
    /// (its codec or packet type), and why: that track is dropped, the
    /// others go on.
    Refused(FlvError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// An AudioSpecificConfig.
    SequenceHeader(Bytes),
    /// One raw AAC frame.
    Frame(Bytes),
    /// Enhanced RTMP packets that carry no audio for streamd (multichannel
    /// layouts, end of sequence, tracks other than 0).
    Ignored,
}

const CODEC_AVC: u8 = 7;
/// HEVC in legacy FLV, as encoders wrote it before Enhanced RTMP.
const CODEC_HEVC_LEGACY: u8 = 12;
const FRAME_KEY: u8 = 1;
const FRAME_COMMAND: u8 = 5;

/// Enhanced RTMP packet types shared by audio and video.
const PACKET_MODEX: u8 = 7;
/// Multitrack types: one track, several of one codec, several codecs.
const ONE_TRACK: u8 = 0;
const MANY_CODECS: u8 = 2;

/// A video message's tags: one per track it carries (one, unless it is a
/// multitrack packet), each with its track id (0, the publisher's default,
/// for a message that names none).
pub fn parse_video(data: Bytes) -> Result<Vec<(u8, VideoTag)>, FlvError> {
    let first = *data.first().ok_or(FlvError::Empty("video"))?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(data);
    }
    Ok(vec![(0, parse_legacy_video(first, data)?)])
}

fn parse_legacy_video(first: u8, data: Bytes) -> Result<VideoTag, FlvError> {
    let frame_type = (first >> 4) & 0x07;
    let codec = match first & 0x0f {
        CODEC_AVC => VideoCodec::H264,
        CODEC_HEVC_LEGACY => VideoCodec::Hevc,
        c => {
            if frame_type == FRAME_COMMAND {
                return Ok(VideoTag::Ignored);
            }
            return Err(FlvError::VideoCodec(c));
        }
    };
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    if data.len() < 5 {
        return Err(FlvError::Truncated {
            what: "AVC video",
            need: 5,
            got: data.len(),
        });
    }
    let cts_ms = read_i24(&data[2..5]);
    match data[1] {
        0 => Ok(VideoTag::SequenceHeader(codec, data.slice(5..))),
        1 => Ok(frame(codec, frame_type, cts_ms, data.slice(5..))),
        2 => Ok(VideoTag::EndOfSequence),
        t => Err(FlvError::AvcPacketType(t)),
    }
}

/// One track of a multitrack packet: its id, FourCC and body.
type Track = (u8, [u8; 4], Bytes);

/// The highest track id taken from a multitrack packet: a publisher's
/// renditions (OBS sends up to 5); higher ids are ignored.
pub const MAX_TRACK: u8 = 7;

/// A cursor over an Enhanced RTMP header, failing as truncated.
struct Cursor<'a> {
    what: &'static str,
    data: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FlvError> {
        if self.data.len() - self.pos < n {
            return Err(FlvError::Truncated {
                what: self.what,
                need: self.pos + n,
                got: self.data.len(),
            });
        }
        self.pos += n;
        Ok(&self.data[self.pos - n..self.pos])
    }

    fn u8(&mut self) -> Result<u8, FlvError> {
        Ok(self.take(1)?[0])
    }

    /// Skips modifier extensions (`ModEx`) while `packet_type` says one
    /// follows, and returns the packet type after them. Their content
    /// (nanosecond timestamp offsets) is below what streamd keeps.
    fn skip_modex(&mut self, mut packet_type: u8) -> Result<u8, FlvError> {
        while packet_type == PACKET_MODEX {
            let mut size = usize::from(self.u8()?) + 1;
            if size == 256 {
                let b = self.take(2)?;
                size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
            }
            self.take(size)?;
            packet_type = self.u8()? & 0x0f;
        }
        Ok(packet_type)
    }

    /// A multitrack packet (from its type byte): the packet type of its
    /// tracks, and each track's id, FourCC and body, for ids up to
    /// [`MAX_TRACK`] (the others are skipped, as is a repeated id).
    fn multitrack(&mut self) -> Result<(u8, Vec<Track>), FlvError> {
        let b = self.u8()?;
        let (kind, packet_type) = (b >> 4, b & 0x0f);
        if kind > MANY_CODECS {
            return Err(FlvError::MultitrackType(kind));
        }
        let mut fourcc = [0; 4];
        if kind != MANY_CODECS {
            fourcc.copy_from_slice(self.take(4)?);
        }
        let mut tracks: Vec<Track> = Vec::new();
        while self.pos < self.data.len() {
            if kind == MANY_CODECS {
                fourcc.copy_from_slice(self.take(4)?);
            }
            let id = self.u8()?;
            let size = if kind == ONE_TRACK {
                self.data.len() - self.pos
            } else {
                let s = self.take(3)?;
                usize::from(s[0]) << 16 | usize::from(s[1]) << 8 | usize::from(s[2])
            };
            let start = self.pos;
            self.take(size)?;
            if id <= MAX_TRACK && tracks.iter().all(|t| t.0 != id) {
                tracks.push((id, fourcc, self.data.slice(start..start + size)));
            }
        }
        Ok((packet_type, tracks))
    }
}

/// Enhanced RTMP: `[1 bit ex-header][3 bits frame type][4 bits packet type]`,
/// modifier extensions, then a FourCC and the body, or a multitrack packet.
fn parse_enhanced_video(data: Bytes) -> Result<Vec<(u8, VideoTag)>, FlvError> {
    let mut c = Cursor {
        what: "Enhanced RTMP video",
        data: &data,
        pos: 1,
    };
    let frame_type = (data[0] >> 4) & 0x07;
    let packet_type = c.skip_modex(data[0] & 0x0f)?;
    if packet_type == 6 {
        let (inner, tracks) = c.multitrack()?;
        return tracks
            .into_iter()
            .map(
                |(id, fourcc, body)| match enhanced_video(frame_type, inner, &fourcc, body) {
                    Ok(tag) => Ok((id, tag)),
                    // Another rendition streamd cannot take costs only itself.
                    Err(e) if id != 0 => Ok((id, VideoTag::Refused(e))),
                    Err(e) => Err(e),
                },
            )
            .collect();
    }
    if frame_type == FRAME_COMMAND {
        // A command (one byte: seek start/end) and no FourCC.
        return Ok(vec![(0, VideoTag::Ignored)]);
    }
    let fourcc: [u8; 4] = c.take(4)?.try_into().expect("four bytes");
    let body = data.slice(c.pos..);
    Ok(vec![(
        0,
        enhanced_video(frame_type, packet_type, &fourcc, body)?,
    )])
}

/// One track's Enhanced RTMP video body.
fn enhanced_video(
    frame_type: u8,
    packet_type: u8,
    fourcc: &[u8; 4],
    body: Bytes,
) -> Result<VideoTag, FlvError> {
    if packet_type == 4 || frame_type == FRAME_COMMAND {
        // Metadata packets and command frames carry no picture.
        return Ok(VideoTag::Ignored);
    }
    let codec = video_codec(fourcc)?;
    match packet_type {
        0 => Ok(VideoTag::SequenceHeader(codec, body)),
        1 if codec != VideoCodec::Av1 => {
            // avc1 and hvc1 coded frames carry a composition time offset.
            if body.len() < 3 {
                return Err(FlvError::Truncated {
                    what: "Enhanced RTMP coded frame",
                    need: 3,
                    got: body.len(),
                });
            }
            Ok(frame(
                codec,
                frame_type,
                read_i24(&body[..3]),
                body.slice(3..),
            ))
        }
        1 | 3 => Ok(frame(codec, frame_type, 0, body)),
        2 => Ok(VideoTag::EndOfSequence),
        t => Err(FlvError::ExPacketType("video", t)),
    }
}

fn fourcc_string(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect()
}

fn frame(codec: VideoCodec, frame_type: u8, cts_ms: i32, data: Bytes) -> VideoTag {
    if data.is_empty() {
        return VideoTag::Ignored;
    }
    VideoTag::Frame {
        codec,
        keyframe: frame_type == FRAME_KEY,
        cts_ms,
        data,
    }
}

fn read_i24(b: &[u8]) -> i32 {
    // Sign-extend a big-endian 24-bit value.
    (i32::from(b[0]) << 24 | i32::from(b[1]) << 16 | i32::from(b[2]) << 8) >> 8
}

const AUDIO_FORMATS: [&str; 16] = [
    "linear PCM",
    "ADPCM",
    "MP3",
    "linear PCM LE",
    "Nellymoser 16k",
    "Nellymoser 8k",
    "Nellymoser",
    "G.711 A-law",
    "G.711 mu-law",
    "Enhanced RTMP audio",
    "AAC",
    "Speex",
    "reserved",
    "reserved",
    "MP3 8k",
    "device-specific",
];

const AUDIO_AAC: u8 = 10;
const AUDIO_EX_HEADER: u8 = 9;

pub fn parse_audio(data: Bytes) -> Result<AudioTag, FlvError> {
    let first = *data.first().ok_or(FlvError::Empty("audio"))?;
    let format = first >> 4;
    if format == AUDIO_EX_HEADER {
        return parse_enhanced_audio(data);
    }
    if format != AUDIO_AAC {
        return Err(FlvError::AudioFormat(
            format,
            AUDIO_FORMATS[usize::from(format)],
        ));
    }
    if data.len() < 2 {
        return Err(FlvError::Truncated {
            what: "AAC audio",
            need: 2,
            got: data.len(),
        });
    }
    match data[1] {
        0 => Ok(AudioTag::SequenceHeader(data.slice(2..))),
        1 => Ok(AudioTag::Frame(data.slice(2..))),
        t => Err(FlvError::AacPacketType(t)),
    }
}

/// Enhanced RTMP audio: `[4 bits format 9][4 bits packet type]`, modifier
/// extensions, then a FourCC and the body, or a multitrack packet.
fn parse_enhanced_audio(data: Bytes) -> Result<AudioTag, FlvError> {
    let mut c = Cursor {
        what: "Enhanced RTMP audio",
        data: &data,
        pos: 1,
    };
    let mut packet_type = c.skip_modex(data[0] & 0x0f)?;
    let (fourcc, body) = if packet_type == 5 {
        let (inner, tracks) = c.multitrack()?;
        packet_type = inner;
        // Track 0, the publisher's default audio; other languages are
        // not carried.
        match tracks.into_iter().find(|t| t.0 == 0) {
            Some((_, fourcc, body)) => (fourcc, body),
            None => return Ok(AudioTag::Ignored),
        }
    } else {
        let mut fourcc = [0; 4];
        fourcc.copy_from_slice(c.take(4)?);
        (fourcc, data.slice(c.pos..))
    };
    if &fourcc != b"mp4a" {
        return Err(FlvError::AudioFourCc(fourcc_string(&fourcc)));
    }
    match packet_type {
        0 => Ok(AudioTag::SequenceHeader(body)),
        1 => Ok(AudioTag::Frame(body)),
        // End of sequence, and a multichannel layout the AudioSpecificConfig
        // already gives.
        2 | 4 => Ok(AudioTag::Ignored),
        t => Err(FlvError::ExPacketType("audio", t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H264: VideoCodec = VideoCodec::H264;

    fn b(v: &[u8]) -> Bytes {
        Bytes::copy_from_slice(v)
    }

    /// The one tag of a single-track message.
    fn parse_video(data: Bytes) -> Result<VideoTag, FlvError> {
        let mut tags = super::parse_video(data)?;
        assert_eq!(tags.len(), 1, "{tags:?}");
        let (id, tag) = tags.pop().unwrap();
        assert_eq!(id, 0);
        Ok(tag)
    }

    #[test]
    fn legacy_avc_tags() {
        let seq = b(&[0x17, 0, 0, 0, 0, 1, 0x64]);
        assert_eq!(
            parse_video(seq),
            Ok(VideoTag::SequenceHeader(H264, b(&[1, 0x64])))
        );
        let key = b(&[0x17, 1, 0, 0, 0x42, 0, 0, 0, 1, 0x65]);
        assert_eq!(
            parse_video(key),
            Ok(VideoTag::Frame {
                codec: H264,
                keyframe: true,
                cts_ms: 66,
                data: b(&[0, 0, 0, 1, 0x65])
            })
        );
        // Negative composition offsets sign-extend.
        let inter = b(&[0x27, 1, 0xff, 0xff, 0xdf, 9]);
        assert!(matches!(
            parse_video(inter),
            Ok(VideoTag::Frame {
                keyframe: false,
                cts_ms: -33,
                ..
            })
        ));
        assert_eq!(
            parse_video(b(&[0x17, 2, 0, 0, 0])),
            Ok(VideoTag::EndOfSequence)
        );
        assert_eq!(parse_video(b(&[0x57, 0])), Ok(VideoTag::Ignored));
        // HEVC as encoders wrote it in legacy FLV (codec id 12).
        assert_eq!(
            parse_video(b(&[0x1c, 0, 0, 0, 0, 1])),
            Ok(VideoTag::SequenceHeader(VideoCodec::Hevc, b(&[1])))
        );
    }

    #[test]
    fn enhanced_rtmp_fourccs() {
        let seq = b(&[0x90, b'a', b'v', b'c', b'1', 1, 2]);
        assert_eq!(
            parse_video(seq),
            Ok(VideoTag::SequenceHeader(H264, b(&[1, 2])))
        );
        let coded = b(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 33, 7]);
        assert_eq!(
            parse_video(coded),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: true,
                cts_ms: 33,
                data: b(&[7])
            })
        );
        let coded_x = b(&[0xa3, b'h', b'v', b'c', b'1', 7]);
        assert!(matches!(
            parse_video(coded_x),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Hevc,
                keyframe: false,
                cts_ms: 0,
                ..
            })
        ));
        // av01 coded frames have no composition offset.
        assert_eq!(
            parse_video(b(&[0x91, b'a', b'v', b'0', b'1', 0x32, 0])),
            Ok(VideoTag::Frame {
                codec: VideoCodec::Av1,
                keyframe: true,
                cts_ms: 0,
                data: b(&[0x32, 0])
            })
        );
        assert_eq!(
            parse_video(b(&[0x92, b'a', b'v', b'0', b'1'])),
            Ok(VideoTag::EndOfSequence)
        );
        // A command frame (seek start) has no FourCC, and no picture.
        assert_eq!(parse_video(b(&[0xd1, 0x00])), Ok(VideoTag::Ignored));
        // Metadata (colorInfo) carries no picture.
        assert_eq!(
            parse_video(b(&[0xd4, b'h', b'v', b'c', b'1', 2, 0])),
            Ok(VideoTag::Ignored)
        );
        assert_eq!(
            parse_video(b(&[0x90, b'v', b'p', b'0', b'9', 1])),
            Err(FlvError::VideoFourCc("vp09".into()))
        );
        assert_eq!(
            parse_video(b(&[0x90, 0, 0xff, b'x', b'\n', 1])),
            Err(FlvError::VideoFourCc("??x?".into()))
        );
        assert_eq!(
            parse_video(b(&[0x95, b'a', b'v', b'0', b'1', 1])),
            Err(FlvError::ExPacketType("video", 5))
        );
    }

    #[test]
    fn modifier_extensions_are_skipped() {
        // ModEx of 3 bytes (a nanosecond offset), then CodedFramesX.
        let v = b(&[0x97, 2, 0, 0, 9, 0x03, b'h', b'v', b'c', b'1', 5]);
        assert!(matches!(
            parse_video(v),
            Ok(VideoTag::Frame { cts_ms: 0, .. })
        ));
        // A 256+ byte ModEx uses the 16-bit size.
        let mut v = vec![0x97, 255, 0x01, 0x00];
        v.extend_from_slice(&[0; 257]);
        v.extend_from_slice(&[0x00, b'a', b'v', b'0', b'1', 7]);
        assert!(matches!(
            parse_video(b(&v)),
            Ok(VideoTag::SequenceHeader(VideoCodec::Av1, _))
        ));
        // ModEx that runs past the end.
        assert!(matches!(
            parse_video(b(&[0x97, 9, 0])),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn multitrack_packets_give_every_track() {
        // One track (id 0), SequenceStart, hvc1.
        let v = b(&[0x96, 0x00, b'h', b'v', b'c', b'1', 0, 1, 2]);
        assert_eq!(
            parse_video(v),
            Ok(VideoTag::SequenceHeader(VideoCodec::Hevc, b(&[1, 2])))
        );
        // Many tracks of one codec, CodedFramesX: track 1, then track 0.
        let v = b(&[
            0x96, 0x13, b'a', b'v', b'c', b'1', 1, 0, 0, 2, 8, 8, 0, 0, 0, 1, 9,
        ]);
        let frame = |data: &[u8]| VideoTag::Frame {
            codec: H264,
            keyframe: true,
            cts_ms: 0,
            data: b(data),
        };
        assert_eq!(
            super::parse_video(v),
            Ok(vec![(1, frame(&[8, 8])), (0, frame(&[9]))])
        );
        // Many codecs: each track names its own.
        let v = b(&[
            0x96, 0x23, b'a', b'v', b'c', b'1', 2, 0, 0, 1, 8, b'a', b'v', b'0', b'1', 0, 0, 0, 1,
            0x32,
        ]);
        let tags = super::parse_video(v).unwrap();
        assert!(matches!(tags[0], (2, VideoTag::Frame { codec: H264, .. })));
        assert!(matches!(
            tags[1],
            (
                0,
                VideoTag::Frame {
                    codec: VideoCodec::Av1,
                    ..
                }
            )
        ));
        // Track 2 in a codec streamd does not take: refused alone.
        let v = b(&[
            0x96, 0x23, b'v', b'p', b'0', b'9', 2, 0, 0, 1, 8, b'a', b'v', b'c', b'1', 0, 0, 0, 1,
            9,
        ]);
        assert_eq!(
            super::parse_video(v),
            Ok(vec![
                (2, VideoTag::Refused(FlvError::VideoFourCc("vp09".into()))),
                (0, frame(&[9]))
            ])
        );
        // Ids above MAX_TRACK, and a repeated id, are skipped.
        let v = b(&[
            0x96, 0x13, b'a', b'v', b'c', b'1', 9, 0, 0, 1, 8, 3, 0, 0, 1, 7, 3, 0, 0, 1, 6,
        ]);
        assert_eq!(super::parse_video(v), Ok(vec![(3, frame(&[7]))]));
        // A track that claims more than there is; an undefined kind.
        let v = b(&[0x96, 0x13, b'a', b'v', b'c', b'1', 0, 0, 0xff, 0xff, 8]);
        assert!(matches!(parse_video(v), Err(FlvError::Truncated { .. })));
        assert_eq!(
            parse_video(b(&[0x96, 0x33, b'a', b'v', b'c', b'1'])),
            Err(FlvError::MultitrackType(3))
        );
    }

    #[test]
    fn video_errors() {
        assert_eq!(parse_video(Bytes::new()), Err(FlvError::Empty("video")));
        assert_eq!(parse_video(b(&[0x12, 0])), Err(FlvError::VideoCodec(2)));
        assert!(matches!(
            parse_video(b(&[0x17, 1, 0])),
            Err(FlvError::Truncated { got: 3, .. })
        ));
        assert_eq!(
            parse_video(b(&[0x17, 9, 0, 0, 0])),
            Err(FlvError::AvcPacketType(9))
        );
        assert!(matches!(
            parse_video(b(&[0x91, b'a', b'v', b'c', b'1', 0])),
            Err(FlvError::Truncated { .. })
        ));
        assert!(matches!(
            parse_video(b(&[0x90, b'a', b'v'])),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn aac_tags_and_errors() {
        assert_eq!(
            parse_audio(b(&[0xaf, 0, 0x12, 0x10])),
            Ok(AudioTag::SequenceHeader(b(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(b(&[0xaf, 1, 0x21])),
            Ok(AudioTag::Frame(b(&[0x21])))
        );
        assert_eq!(parse_audio(Bytes::new()), Err(FlvError::Empty("audio")));
        assert_eq!(
            parse_audio(b(&[0x2f, 1])),
            Err(FlvError::AudioFormat(2, "MP3"))
        );
        assert!(matches!(
            parse_audio(b(&[0xaf])),
            Err(FlvError::Truncated { .. })
        ));
        assert_eq!(parse_audio(b(&[0xaf, 7])), Err(FlvError::AacPacketType(7)));
    }

    #[test]
    fn enhanced_audio() {
        assert_eq!(
            parse_audio(b(&[0x90, b'm', b'p', b'4', b'a', 0x12, 0x10])),
            Ok(AudioTag::SequenceHeader(b(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(b(&[0x91, b'm', b'p', b'4', b'a', 0x21])),
            Ok(AudioTag::Frame(b(&[0x21])))
        );
        // Multitrack, one track (id 0).
        assert_eq!(
            parse_audio(b(&[0x95, 0x01, b'm', b'p', b'4', b'a', 0, 0x21])),
            Ok(AudioTag::Frame(b(&[0x21])))
        );
        assert_eq!(
            parse_audio(b(&[0x91, b'O', b'p', b'u', b's', 0])),
            Err(FlvError::AudioFourCc("Opus".into()))
        );
        assert!(matches!(
            parse_audio(b(&[0x91, b'm', b'p'])),
            Err(FlvError::Truncated { .. })
        ));
    }
}
