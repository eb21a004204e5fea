//! Codec-level knowledge shared by ingest, packagers and (later) transcoding:
//! H.264, HEVC, AV1, AAC and Opus configuration records, parsed from
//! untrusted bytes; and CMAF, the container LL-HLS, recordings and the
//! cluster's pulls share.

pub mod aac;
pub mod av1;
mod bits;
pub mod cmaf;
pub mod h264;
pub mod hevc;
pub mod opus;

pub use aac::{AacConfig, AacError};
pub use av1::{Av1Config, Av1Error};
pub use h264::{AvcConfig, H264Error};
pub use hevc::{HevcConfig, HevcError};
pub use opus::OpusConfig;

/// The video codecs streamd ingests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Hevc,
    Av1,
}

/// The decoder configuration of a track. It travels with every group on the
/// bus, so a consumer notices a mid-stream change (new SPS, new sample rate)
/// at the group where it takes effect.
#[derive(Clone, Debug, PartialEq)]
pub enum CodecConfig {
    H264(AvcConfig),
    /// Enhanced RTMP's `hvc1`: passed through to LL-HLS, decoded by the ladder.
    Hevc(HevcConfig),
    /// Enhanced RTMP's `av01`: as HEVC.
    Av1(Av1Config),
    Aac(AacConfig),
    /// Only produced by the transcoder, for WebRTC; LL-HLS carries AAC.
    Opus(OpusConfig),
}

impl CodecConfig {
    /// The RFC 6381 codec string for HLS `CODECS`.
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::H264(c) => c.codec_string(),
            CodecConfig::Hevc(c) => c.codec_string(),
            CodecConfig::Av1(c) => c.codec_string(),
            CodecConfig::Aac(c) => c.codec_string(),
            CodecConfig::Opus(_) => "opus".to_owned(),
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(
            self,
            CodecConfig::H264(_) | CodecConfig::Hevc(_) | CodecConfig::Av1(_)
        )
    }

    /// A video track's codec.
    pub fn video_codec(&self) -> Option<VideoCodec> {
        match self {
            CodecConfig::H264(_) => Some(VideoCodec::H264),
            CodecConfig::Hevc(_) => Some(VideoCodec::Hevc),
            CodecConfig::Av1(_) => Some(VideoCodec::Av1),
            CodecConfig::Aac(_) | CodecConfig::Opus(_) => None,
        }
    }

    /// A video track's picture size.
    pub fn video_size(&self) -> Option<(u32, u32)> {
        match self {
            CodecConfig::H264(c) => Some((c.info.width, c.info.height)),
            CodecConfig::Hevc(c) => Some((c.width, c.height)),
            CodecConfig::Av1(c) => Some((c.width, c.height)),
            CodecConfig::Aac(_) | CodecConfig::Opus(_) => None,
        }
    }

    /// The codec's short name, for logs and the API.
    pub fn name(&self) -> &'static str {
        match self {
            CodecConfig::H264(_) => "H264",
            CodecConfig::Hevc(_) => "H265",
            CodecConfig::Av1(_) => "AV1",
            CodecConfig::Aac(_) => "AAC",
            CodecConfig::Opus(_) => "OPUS",
        }
    }
}
