//! FLV audio and video tag bodies, as RTMP carries them (E.4.2.1/E.4.3.1 of
//! the FLV spec, and Enhanced RTMP's FourCC video header for `avc1`).
//!
//! Sans-IO: bytes in, a typed tag out, or an [`FlvError`] saying what is wrong.
//! Payload slices share the input buffer (no copies).

use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty {0} tag")]
    Empty(&'static str),
    #[error("{what} tag is {got} bytes, shorter than its {need}-byte header")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("video codec id {0} is not supported (streamd ingests H.264)")]
    VideoCodec(u8),
    #[error("Enhanced RTMP video codec {0:?} is not supported (streamd ingests H.264)")]
    VideoFourCc(String),
    #[error("audio format {0} ({1}) is not supported (streamd ingests AAC)")]
    AudioFormat(u8, &'static str),
    #[error("unknown AVC packet type {0}")]
    AvcPacketType(u8),
    #[error("unknown AAC packet type {0}")]
    AacPacketType(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// An AVCDecoderConfigurationRecord (avcC).
    SequenceHeader(Bytes),
    /// One access unit: length-prefixed NAL units.
    Frame {
        keyframe: bool,
        /// Composition time offset (PTS - DTS) in milliseconds.
        cts_ms: i32,
        data: Bytes,
    },
    EndOfSequence,
    /// Video info/command frames (frame type 5) and empty payloads, which
    /// carry no picture.
    Ignored,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// An AudioSpecificConfig.
    SequenceHeader(Bytes),
    /// One raw AAC frame.
    Frame(Bytes),
}

const CODEC_AVC: u8 = 7;
const FRAME_KEY: u8 = 1;
const FRAME_COMMAND: u8 = 5;

pub fn parse_video(data: Bytes) -> Result<VideoTag, FlvError> {
    let first = *data.first().ok_or(FlvError::Empty("video"))?;
    if first & 0x80 != 0 {
        return parse_enhanced_video(data);
    }
    let frame_type = (first >> 4) & 0x07;
    let codec = first & 0x0f;
    if frame_type == FRAME_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    if codec != CODEC_AVC {
        return Err(FlvError::VideoCodec(codec));
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
        0 => Ok(VideoTag::SequenceHeader(data.slice(5..))),
        1 => Ok(frame(frame_type, cts_ms, data.slice(5..))),
        2 => Ok(VideoTag::EndOfSequence),
        t => Err(FlvError::AvcPacketType(t)),
    }
}

/// Enhanced RTMP: `[1 bit ex-header][3 bits frame type][4 bits packet type][FourCC]...`.
fn parse_enhanced_video(data: Bytes) -> Result<VideoTag, FlvError> {
    if data.len() < 5 {
        return Err(FlvError::Truncated {
            what: "Enhanced RTMP video",
            need: 5,
            got: data.len(),
        });
    }
    let frame_type = (data[0] >> 4) & 0x07;
    let packet_type = data[0] & 0x0f;
    let fourcc = &data[1..5];
    if packet_type == 4 || frame_type == FRAME_COMMAND {
        // Metadata packets and command frames carry no picture.
        return Ok(VideoTag::Ignored);
    }
    if fourcc != b"avc1" {
        return Err(FlvError::VideoFourCc(
            String::from_utf8_lossy(fourcc).into_owned(),
        ));
    }
    match packet_type {
        0 => Ok(VideoTag::SequenceHeader(data.slice(5..))),
        1 => {
            if data.len() < 8 {
                return Err(FlvError::Truncated {
                    what: "Enhanced RTMP coded frame",
                    need: 8,
                    got: data.len(),
                });
            }
            Ok(frame(frame_type, read_i24(&data[5..8]), data.slice(8..)))
        }
        2 => Ok(VideoTag::EndOfSequence),
        3 => Ok(frame(frame_type, 0, data.slice(5..))),
        t => Err(FlvError::AvcPacketType(t)),
    }
}

fn frame(frame_type: u8, cts_ms: i32, data: Bytes) -> VideoTag {
    if data.is_empty() {
        return VideoTag::Ignored;
    }
    VideoTag::Frame {
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
    "reserved",
    "AAC",
    "Speex",
    "reserved",
    "Enhanced RTMP audio",
    "MP3 8k",
    "device-specific",
];

pub fn parse_audio(data: Bytes) -> Result<AudioTag, FlvError> {
    let first = *data.first().ok_or(FlvError::Empty("audio"))?;
    let format = first >> 4;
    if format != 10 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_tags() {
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64]);
        assert_eq!(
            parse_video(seq),
            Ok(VideoTag::SequenceHeader(Bytes::from_static(&[1, 0x64])))
        );
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0x42, 0, 0, 0, 1, 0x65]);
        assert_eq!(
            parse_video(key),
            Ok(VideoTag::Frame {
                keyframe: true,
                cts_ms: 66,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65])
            })
        );
        // Negative composition offsets sign-extend.
        let inter = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf, 9]);
        assert!(matches!(
            parse_video(inter),
            Ok(VideoTag::Frame {
                keyframe: false,
                cts_ms: -33,
                ..
            })
        ));
        assert_eq!(
            parse_video(Bytes::from_static(&[0x17, 2, 0, 0, 0])),
            Ok(VideoTag::EndOfSequence)
        );
        assert_eq!(
            parse_video(Bytes::from_static(&[0x57, 0])),
            Ok(VideoTag::Ignored)
        );
    }

    #[test]
    fn enhanced_rtmp_avc1() {
        let seq = Bytes::from_static(&[0x90, b'a', b'v', b'c', b'1', 1, 2]);
        assert_eq!(
            parse_video(seq),
            Ok(VideoTag::SequenceHeader(Bytes::from_static(&[1, 2])))
        );
        let coded = Bytes::from_static(&[0x91, b'a', b'v', b'c', b'1', 0, 0, 33, 7]);
        assert_eq!(
            parse_video(coded),
            Ok(VideoTag::Frame {
                keyframe: true,
                cts_ms: 33,
                data: Bytes::from_static(&[7])
            })
        );
        let coded_x = Bytes::from_static(&[0xa3, b'a', b'v', b'c', b'1', 7]);
        assert!(matches!(
            parse_video(coded_x),
            Ok(VideoTag::Frame {
                keyframe: false,
                cts_ms: 0,
                ..
            })
        ));
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1]);
        assert_eq!(parse_video(hevc), Err(FlvError::VideoFourCc("hvc1".into())));
    }

    #[test]
    fn video_errors() {
        assert_eq!(parse_video(Bytes::new()), Err(FlvError::Empty("video")));
        assert_eq!(
            parse_video(Bytes::from_static(&[0x12, 0])),
            Err(FlvError::VideoCodec(2))
        );
        assert!(matches!(
            parse_video(Bytes::from_static(&[0x17, 1, 0])),
            Err(FlvError::Truncated { got: 3, .. })
        ));
        assert_eq!(
            parse_video(Bytes::from_static(&[0x17, 9, 0, 0, 0])),
            Err(FlvError::AvcPacketType(9))
        );
        assert!(matches!(
            parse_video(Bytes::from_static(&[0x91, b'a', b'v', b'c', b'1', 0])),
            Err(FlvError::Truncated { .. })
        ));
    }

    #[test]
    fn aac_tags_and_errors() {
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf, 0, 0x12, 0x10])),
            Ok(AudioTag::SequenceHeader(Bytes::from_static(&[0x12, 0x10])))
        );
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf, 1, 0x21])),
            Ok(AudioTag::Frame(Bytes::from_static(&[0x21])))
        );
        assert_eq!(parse_audio(Bytes::new()), Err(FlvError::Empty("audio")));
        assert_eq!(
            parse_audio(Bytes::from_static(&[0x2f, 1])),
            Err(FlvError::AudioFormat(2, "MP3"))
        );
        assert!(matches!(
            parse_audio(Bytes::from_static(&[0xaf])),
            Err(FlvError::Truncated { .. })
        ));
        assert_eq!(
            parse_audio(Bytes::from_static(&[0xaf, 7])),
            Err(FlvError::AacPacketType(7))
        );
    }
}
