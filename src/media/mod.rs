//! Codec-level knowledge shared by ingest, packagers and (later) transcoding:
//! H.264 and AAC configuration records, parsed from untrusted bytes.

pub mod aac;
mod bits;
pub mod h264;

pub use aac::{AacConfig, AacError};
pub use h264::{AvcConfig, H264Error};

/// The decoder configuration of a track. It travels with every group on the
/// bus, so a consumer notices a mid-stream change (new SPS, new sample rate)
/// at the group where it takes effect.
#[derive(Clone, Debug, PartialEq)]
pub enum CodecConfig {
    H264(AvcConfig),
    Aac(AacConfig),
}

impl CodecConfig {
    /// The RFC 6381 codec string for HLS `CODECS`.
    pub fn codec_string(&self) -> String {
        match self {
            CodecConfig::H264(c) => c.codec_string(),
            CodecConfig::Aac(c) => c.codec_string(),
        }
    }

    pub fn is_video(&self) -> bool {
        matches!(self, CodecConfig::H264(_))
    }
}
