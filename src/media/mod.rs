//! Codec-level knowledge shared by ingest, packagers and (later) transcoding:
//! H.264, AAC and Opus configuration records, parsed from untrusted bytes.

pub mod aac;
mod bits;
pub mod h264;
pub mod opus;

pub use aac::{AacConfig, AacError};
pub use h264::{AvcConfig, H264Error};
pub use opus::OpusConfig;

/// The decoder configuration of a track. It travels with every group on the
/// bus, so a consumer notices a mid-stream change (new SPS, new sample rate)
/// at the group where it takes effect.
#[derive(Clone, Debug, PartialEq)]
pub enum CodecConfig {
    H264(AvcConfig),
    Aac(AacConfig),
    /// Only produced by the transcoder, for WebRTC; LL-HLS carries AAC.
    Opus(OpusConfig),
}

impl CodecConfig {
    /// The RFC 6381 codec string for HLS `CODECS`.
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::H264(c) => c.codec_string(),
            CodecConfig::Aac(c) => c.codec_string(),
            CodecConfig::Opus(_) => "opus".to_owned(),
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(self, CodecConfig::H264(_))
    }
}
